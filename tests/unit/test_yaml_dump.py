"""`dump_all` writes YAML that `load_all` (kubectl's reading) reads back unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from rlkd.spec.yamlio import dump_all, load_all


@pytest.mark.parametrize(
    "value",
    ["y", "n", "on", "off", "5e-5", "1e3", "0x1F", "012", "12:30", "2024-06-01", "null", "~", ""],
)
def test_strings_that_look_like_other_types_stay_strings(value: str) -> None:
    assert load_all(dump_all([{"key": value}])) == [{"key": value}]


@pytest.mark.parametrize("value", [5e-05, 0.1, 42, True, None, [], {}])
def test_values_read_back_equal(value: Any) -> None:
    assert load_all(dump_all([{"key": value}])) == [{"key": value}]


def test_multi_line_strings_are_blocks_and_documents_are_separated() -> None:
    text = dump_all([{"prompt": "one\ntwo\n"}, {"b": 1}])
    assert text == "prompt: |\n  one\n  two\n---\nb: 1\n"
    assert load_all(text) == [{"prompt": "one\ntwo\n"}, {"b": 1}]
