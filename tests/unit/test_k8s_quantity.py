"""Quantities in the API server's canonical form: upstream's own examples
(k8s.io/apimachinery/pkg/api/resource/quantity_test.go, TestQuantityParseEmit and
TestQuantityParse's inputs with what `String()` emits for them), and what our builders write."""

from __future__ import annotations

import pytest

from rlkd.k8s.quantity import QuantityError, canonical, same_quantity


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        # TestQuantityParseEmit
        ("1Ki", "1Ki"),
        ("1Mi", "1Mi"),
        ("1Gi", "1Gi"),
        ("1024Mi", "1Gi"),
        ("1000M", "1G"),
        (".001Ki", "1024m"),
        (".000001Ki", "1024u"),
        (".000000001Ki", "1024n"),
        (".000000000001Ki", "2n"),
        # TestQuantityParse inputs, in canonical form
        ("0", "0"),
        ("0n", "0"),
        ("0Mi", "0"),
        ("5n", "5n"),
        ("50k", "50k"),
        ("40T", "40T"),
        ("12E", "12E"),
        ("100.035k", "100035"),
        ("10.035M", "10035k"),
        ("8.1k", "8100"),
        ("1.01E", "1010P"),
        ("0.0005k", "500m"),
        ("1e3", "1e3"),
        ("1E6", "1e6"),
        ("1E-3", "1e-3"),
        ("0.5e0", "500e-3"),
        ("1.2e3", "1200"),
        ("1.3E+6", "1300e3"),
        ("3.001n", "4n"),  # rounded up to a nano
        ("0.0000000001", "1n"),
        ("0.00000012345", "124n"),
        ("100.035Ki", "102435840m"),  # fractional binary: decimal
        ("0.5Mi", "512Ki"),
        ("1.5Gi", "1536Mi"),
        ("1.", "1"),
        ("1.G", "1G"),
        ("+1", "1"),
        ("-1536Mi", "-1536Mi"),
        ("-0.5", "-500m"),
        # What the issue and our builders meet
        (1, "1"),
        (4, "4"),
        (0.5, "500m"),
        ("1000m", "1"),
        ("2048Ki", "2Mi"),
        ("1500m", "1500m"),
        ("64Gi", "64Gi"),
        ("1023Ki", "1023Ki"),
        ("512", "512"),  # below 1024 with no suffix stays decimal
    ],
)
def test_canonical_is_what_the_api_server_stores(given: str | int | float, stored: str) -> None:
    assert canonical(given) == stored
    assert canonical(stored) == stored  # canonical form is a fixed point


@pytest.mark.parametrize("bad", ["", "aoeu", "1i", ".5i", "0.1mi", "1.1.M", " 1", "1 ", True, None])
def test_not_a_quantity_is_an_error(bad: object) -> None:
    with pytest.raises(QuantityError):
        canonical(bad)  # type: ignore[arg-type]


def test_same_quantity_compares_values() -> None:
    assert same_quantity(1, "1") and same_quantity("0.5", "500m") and same_quantity("1Gi", "1024Mi")
    assert not same_quantity("1G", "1Gi")
    assert same_quantity("x", "x") and not same_quantity(None, "1")  # else plain equality
