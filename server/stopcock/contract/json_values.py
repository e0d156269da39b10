"""JSON values that went through protobuf's Struct/Value, made plain again."""

from __future__ import annotations

from typing import Any


def integral_as_int(value: Any) -> Any:
    """`value` with integral doubles turned back into ints.

    Struct and Value keep every number as a double, so `3` comes back `3.0`;
    a double that is integral and exactly representable was an int.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: integral_as_int(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral_as_int(v) for v in value]
    return value
