"""Feldera's column types: their program_info shape (ColumnType) and their SQLite storage.

program_info reports Feldera's wire names (feldera_types::program_schema::
SqlType::as_wire_str). SQLite stores each type under a fixed declared type
(its affinity): the same Feldera type always gives the same SQLite text,
which bootstrapping compares across program versions.
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp

T = exp.DType

# sqlglot's type -> (Feldera's wire name, SQLite declared type)
_SCALARS: dict[Any, tuple[str, str]] = {
    T.BOOLEAN: ("BOOLEAN", "BOOLEAN"),
    T.TINYINT: ("TINYINT", "INTEGER"),
    T.SMALLINT: ("SMALLINT", "INTEGER"),
    T.INT: ("INTEGER", "INTEGER"),
    T.BIGINT: ("BIGINT", "INTEGER"),
    T.UTINYINT: ("UTINYINT", "INTEGER"),
    T.USMALLINT: ("USMALLINT", "INTEGER"),
    T.UINT: ("UINTEGER", "INTEGER"),
    T.UBIGINT: ("UBIGINT", "INTEGER"),
    T.FLOAT: ("REAL", "REAL"),
    T.DOUBLE: ("DOUBLE", "REAL"),
    T.DECIMAL: ("DECIMAL", "NUMERIC"),
    T.CHAR: ("CHAR", "TEXT"),
    T.VARCHAR: ("VARCHAR", "TEXT"),
    T.TEXT: ("VARCHAR", "TEXT"),  # STRING, TEXT
    T.BINARY: ("BINARY", "BLOB"),
    T.VARBINARY: ("VARBINARY", "BLOB"),
    T.DATE: ("DATE", "TEXT"),
    T.TIME: ("TIME", "TEXT"),
    T.TIMESTAMP: ("TIMESTAMP", "TEXT"),
    T.UUID: ("UUID", "TEXT"),
    T.VARIANT: ("VARIANT", "TEXT"),
}
# Feldera's defaults where the program gives no precision (Calcite's type system).
_DEFAULT_PRECISION = {
    "CHAR": 1,
    "VARCHAR": -1,
    "BINARY": 1,
    "VARBINARY": -1,
    "TIME": 0,
    "TIMESTAMP": 0,
}
_DEFAULT_DECIMAL = (28, 0)


class UnsupportedType(Exception):
    """A column type the engine cannot store; the message names it."""


def _params(dtype: exp.DataType) -> list[int]:
    out = []
    for param in dtype.expressions:
        value = param.this if isinstance(param, exp.DataTypeParam) else param
        try:
            out.append(int(value.name))
        except (AttributeError, ValueError):
            raise UnsupportedType(f"type parameter '{param.sql()}'") from None
    return out


def column_type(dtype: exp.DataType, nullable: bool) -> dict[str, Any]:
    """Feldera's ColumnType JSON for a sqlglot type, as its compiler prints it (Calcite's
    RelJson): `type` and `nullable`, then only the members the type has."""
    kind = dtype.this
    if kind == T.ARRAY:
        (inner,) = dtype.expressions
        return {"type": "ARRAY", "nullable": nullable, "component": column_type(inner, True)}
    if kind == T.MAP:
        key, value = dtype.expressions
        return {
            "type": "MAP",
            "nullable": nullable,
            "key": column_type(key, False),
            "value": column_type(value, True),
        }
    if kind not in _SCALARS:
        raise UnsupportedType(f"type {dtype.sql()}")
    name = _SCALARS[kind][0]
    params = [] if kind == T.TEXT else _params(dtype)
    if name == "DECIMAL":
        precision, scale = (params + list(_DEFAULT_DECIMAL[len(params) :]))[:2]
        return {"type": name, "nullable": nullable, "precision": precision, "scale": scale}
    if name in _DEFAULT_PRECISION:
        precision = params[0] if params else _DEFAULT_PRECISION[name]
        return {"type": name, "nullable": nullable, "precision": precision}
    return {"type": name, "nullable": nullable}


def sqlite_type(dtype: exp.DataType) -> str:
    """The declared type that stores a Feldera type in SQLite (collections as JSON text)."""
    if dtype.this in (T.ARRAY, T.MAP):
        return "TEXT"
    if dtype.this not in _SCALARS:
        raise UnsupportedType(f"type {dtype.sql()}")
    return _SCALARS[dtype.this][1]


def from_sqlite(declared: str | None) -> str:
    """A Feldera wire name for a column SQLite typed itself (a view's computed column)."""
    upper = (declared or "").upper()
    if "INT" in upper:
        return "BIGINT"
    if "CHAR" in upper or "TEXT" in upper or "CLOB" in upper:
        return "VARCHAR"
    if "REAL" in upper or "FLOA" in upper or "DOUB" in upper:
        return "DOUBLE"
    if "BLOB" in upper:
        return "VARBINARY"
    if upper == "BOOLEAN":
        return "BOOLEAN"
    if upper in ("NUMERIC", "DECIMAL"):
        return "DECIMAL"
    return upper or "VARIANT"
