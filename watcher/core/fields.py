"""How a resource kind reads its fields from the API's JSON: small pure converters.

Each converter turns the value of one top-level field into the text a snapshot keeps, and
"" when the value is absent or of the wrong type (the schema grows, proto3 omits defaults).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

#: Converts the value of one top-level field of the resource's JSON to the text the watcher
#: keeps ("" when absent or of the wrong type: the schema grows and proto3 omits defaults).
Convert = Callable[[object], str]


@dataclass(frozen=True, slots=True)
class Field:
    """Where one snapshot field comes from: a top-level JSON key and how to read its value."""

    key: str
    convert: Convert


def _text(value: object) -> str:
    return value if type(value) is str else ""


def _number(value: object) -> str:
    # `type() is`, not isinstance: bool is an int subclass, and `true` is no count.
    if type(value) is int:
        return str(value)
    if type(value) is float and math.isfinite(value):
        return f"{value:g}"
    if type(value) is str and _INT64.fullmatch(value):  # proto3 JSON sends int64 as a string
        return str(int(value))
    return ""


_INT64: Final = re.compile(r"-?[0-9]{1,19}")


def sub(name: str, read: Convert = _text) -> Convert:
    """Read `name` inside an object value, e.g. `trainingConfig.baseModel`."""

    def convert(value: object) -> str:
        return read(value.get(name)) if type(value) is dict else ""

    return convert


def money(value: object) -> str:
    """`{"currencyCode": "USD", "units": "12", "nanos": 500000000}` -> `USD 12.50`."""
    if type(value) is not dict:
        return ""
    units, nanos = _number(value.get("units")), _number(value.get("nanos"))
    if not units and not nanos:
        return ""
    amount = float(units or 0) + float(nanos or 0) / 1e9
    return f"{_text(value.get('currencyCode'))} {amount:.2f}".strip()


def sum_of_values(value: object) -> str:
    """`{"NVIDIA_H100_80GB": "3600", ...}` (int64 strings per accelerator) -> the total."""
    if type(value) is not dict:
        return ""
    numbers = [float(n) for n in map(_number, value.values()) if n]
    return f"{sum(numbers):g}" if numbers else ""


def text(key: str, inner: str | None = None) -> Field:
    """A string field, at `key` or at `key.inner`."""
    return Field(key, _text if inner is None else sub(inner))


def number(key: str, inner: str | None = None) -> Field:
    """A number field (int64 strings included), at `key` or at `key.inner`."""
    return Field(key, _number if inner is None else sub(inner, _number))
