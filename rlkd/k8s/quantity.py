"""Resource quantities in the API server's canonical form.

The API server parses every `resources.requests/limits` value as a Quantity and stores it in
canonical form (k8s.io/apimachinery/pkg/api/resource/quantity.go, `CanonicalizeBytes`):
`nvidia.com/gpu: 1` comes back as `"1"`, `cpu: 0.5` as `"500m"`, `1024Mi` as `"1Gi"`. A child
compared with its live copy must use that form, or it looks edited on every poll. Exact decimal
arithmetic (Fraction), as upstream never uses floats.
"""

from __future__ import annotations

import re
from fractions import Fraction
from math import ceil
from typing import Any

_NUMBER = re.compile(r"^([+-]?)([0-9]*)(?:\.([0-9]*))?(.*)$")
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {exponent: suffix for suffix, exponent in _DECIMAL.items()}
_EXPONENT = re.compile(r"^[eE]([+-]?[0-9]+)$")
_NANO = Fraction(1, 10**9)
_MAX_BINARY = Fraction(2**63 - 1)


class QuantityError(ValueError):
    """Not a Kubernetes quantity."""


def _parse(text: str) -> tuple[Fraction, str]:
    """(value, format) with format "binary", "decimal" or "exponent", as ParseQuantity reads it:
    values rounded up (away from zero) to a nano, binary ones capped at 2^63-1."""
    match = _NUMBER.match(text)
    if not text or match is None or (not match[2] and match[3] is None):
        raise QuantityError(f"{text!r} is not a quantity (e.g. 500m, 2, 16Gi)")
    sign, whole, fraction, suffix = match[1], match[2], match[3] or "", match[4]
    number = Fraction(int(whole or "0")) + (
        Fraction(int(fraction), 10 ** len(fraction)) if fraction else 0
    )
    if suffix in _BINARY:
        value, form = number * 1024 ** _BINARY[suffix], "binary"
    elif suffix in _DECIMAL:
        value, form = number * Fraction(10) ** _DECIMAL[suffix], "decimal"
    elif exponent := _EXPONENT.match(suffix):
        value, form = number * Fraction(10) ** int(exponent[1]), "exponent"
    else:
        raise QuantityError(f"{text!r} has an unknown suffix {suffix!r} (use m, k, M, Gi, ...)")
    value = ceil(value / _NANO) * _NANO  # upstream rounds any non-zero value up to a nano
    if form == "binary":
        value = min(value, _MAX_BINARY)
        if 0 < value < 1:
            form = "decimal"
    return (-value if sign == "-" else value), form


def _decimal(value: Fraction, form: str) -> str:
    """Mantissa and a base-10 exponent that is a multiple of 3, as large as is exact."""
    exponent = -9
    mantissa = int(value / _NANO)  # exact: values are whole nanos
    while mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    while exponent % 3:
        mantissa *= 10
        exponent -= 1
    if form == "exponent":
        return f"{mantissa}" + (f"e{exponent}" if exponent else "")
    while exponent > 18:  # beyond E: upstream has no suffix; keep the value exact
        mantissa *= 1000
        exponent -= 3
    return f"{mantissa}{_DECIMAL_SUFFIX[exponent]}"


def canonical(quantity: str | int | float) -> str:
    """The string the API server stores for `quantity` (a number is read as its JSON text)."""
    if isinstance(quantity, bool) or not isinstance(quantity, str | int | float):
        raise QuantityError(f"{quantity!r} is not a quantity (e.g. 500m, 2, 16Gi)")
    value, form = _parse(quantity if isinstance(quantity, str) else repr(quantity))
    if value == 0:
        return "0"
    if form == "binary" and (abs(value) < 1024 or value.denominator != 1):
        form = "decimal"  # small or fractional binary values are written in decimal
    if form != "binary":
        return ("-" if value < 0 else "") + _decimal(abs(value), form)
    mantissa, power = int(abs(value)), 0
    while mantissa % 1024 == 0 and power < 6:
        mantissa //= 1024
        power += 1
    suffix = {v: k for k, v in _BINARY.items()}.get(power, "")
    return ("-" if value < 0 else "") + f"{mantissa}{suffix}"


def same_quantity(a: Any, b: Any) -> bool:
    """Whether two quantities are equal in value (anything else: whether they are equal)."""
    try:
        return _parse(canonical(a))[0] == _parse(canonical(b))[0]
    except QuantityError:
        return bool(a == b)
