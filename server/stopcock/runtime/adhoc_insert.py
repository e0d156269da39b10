"""An ad-hoc INSERT's literal values, typed by the table's columns as CSV ingress types fields.

The literals (stopcock.sql.adhoc.Insert) go through the JSON ingress path,
which leaves types to SQLite's storage classes; each value is first read by
its column's CSV field parser (csv_rows), so that `'x'` or `1.5` for an INT
column, or `'2024-13-01'` for a DATE, refuses the whole INSERT with the
parser's message (Feldera's), and dates and timestamps are stored in
canonical form as CSV ingress stores them.
"""

from __future__ import annotations

from typing import Any

from stopcock.runtime.csv_rows import Column, FieldError
from stopcock.runtime.data import DataError
from stopcock.sql.adhoc import Insert


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def typed_rows(insert: Insert, columns: list[Column]) -> list[dict[str, Any]]:
    """The INSERT's rows, each value read as its column's type; DataError if one is not."""
    by_name = {c.name: c for c in columns}
    rows = []
    for index, row in enumerate(insert.rows):
        typed: dict[str, Any] = {}
        for name, value in row.items():
            column = by_name.get(name)
            if value is None or column is None:
                typed[name] = value
                continue
            try:
                typed[name] = _text(value) if column.is_string else column.parse(_text(value))
            except FieldError as exc:
                error = f"column '{name}': {exc} ({_text(value)!r})"
                raise DataError(
                    400,
                    "InvalidIngressData",
                    f"Invalid input for table '{insert.table}' (row {index + 1} of the INSERT): "
                    f"{error}; nothing was ingested",
                    {"table": insert.table, "update_index": index, "error": error},
                ) from None
        rows.append(typed)
    return rows
