"""Rows into the pipeline's database: parsing, checking, applying.

Ingest parses the JSON updates, checks every one against the table's
columns, and applies them in one transaction (on the database thread): a bad
update rejects the whole request and changes nothing. Rows out (queries) are
in stopcock.runtime.queries.
"""

from __future__ import annotations

import json
import operator
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


class DataError(Exception):
    """A refusal in the contract's terms: HTTP status, error code, details."""

    def __init__(self, http_status: int, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message
        self.details = details


def out_of_room(error: str) -> DataError:
    """The pipeline's memory (tmpfs) or the spool's disk is full: nothing was ingested.

    Not the client's data at fault, so not a 400; not a bug, so not a 500.
    """
    return DataError(
        507,
        "InsufficientStorage",
        f"The pipeline has no room for these rows ({error}); nothing was ingested. "
        "Free memory (/dev/shm) or disk, or send less at a time",
        {"error": error},
    )


def _bad(table: str, index: int | None, error: str) -> DataError:
    where = "" if index is None else f" (update {index})"
    return DataError(
        400,
        "InvalidIngressData",
        f"Invalid input for table '{table}'{where}: {error}; nothing was ingested",
        {"table": table, "update_index": index, "error": error},
    )


def table_columns(db: sqlite3.Connection, table: str) -> tuple[str, list[str]]:
    """The table's real name and its columns, the table found by Feldera's name rules.

    `"Name"` (quoted) names the table exactly; an unquoted name matches
    case-insensitively a table declared unquoted (stored lowercased, see
    stopcock.sql.compiler), and a quoted declaration only when spelt exactly.
    """
    quoted = len(table) >= 2 and table[0] == table[-1] == '"'
    wanted = table[1:-1] if quoted else table
    row = db.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = ? COLLATE NOCASE",
        (wanted,),
    ).fetchone()
    if row is not None and row[0] != wanted and (quoted or row[0] != row[0].lower()):
        row = None
    if row is None:
        raise DataError(
            404,
            "UnknownInputTable",
            f"Pipeline has no table '{table}'",
            {"table": table},
        )
    name: str = row[0]
    cols = [r[0] for r in db.execute("SELECT name FROM pragma_table_info(?)", (name,))]
    return name, cols


def parse_lines(data: bytes, table: str) -> list[Any]:
    """One JSON document per line (blank lines skipped).

    Parsed in one call, as one array of the lines (newlines turned into
    commas): ~2x faster than a call per line. A line holding more or less
    than one document (`1, 2`, a blank line) changes the count or breaks
    the array, and then each line is parsed alone, so that a bad one is
    refused and blank ones are skipped.
    """
    body = data.rstrip(b" \t\r\n")
    if not body:
        return []
    try:
        updates = json.loads(b"[" + body.replace(b"\n", b",") + b"]")
        if isinstance(updates, list) and len(updates) == body.count(b"\n") + 1:
            return updates
    except (ValueError, UnicodeDecodeError):
        pass
    lines = [line for line in body.splitlines() if line.strip()]
    try:
        return [json.loads(line) for line in lines]
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(table, None, f"malformed JSON: {exc}") from exc


def parse_updates(data: bytes, array: bool, table: str) -> list[Any]:
    if not array:
        return parse_lines(data, table)
    try:
        updates = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(table, None, f"malformed JSON: {exc}") from exc
    if not isinstance(updates, list):
        raise _bad(table, None, "with array=true the body must be a JSON array")
    return updates


def _row_values(
    row: Any, cols: list[str], lower: dict[str, str], table: str, i: int
) -> tuple[Any, ...]:
    if not isinstance(row, dict):
        raise _bad(table, i, "a row must be a JSON object")
    values: dict[str, Any] = {}
    for key, value in row.items():
        col = lower.get(key.lower())
        if col is None:
            raise _bad(table, i, f"unknown column '{key}'")
        if isinstance(value, dict | list):
            raise _bad(table, i, f"column '{key}' holds a nested value")
        values[col] = value
    return tuple(values.get(c) for c in cols)


@dataclass(frozen=True, slots=True)
class TableShape:
    """What ingest needs to know of a table, read once per request."""

    table: str  # as the client spelt it (for messages)
    name: str
    cols: list[str]
    lower: dict[str, str]
    exact: frozenset[str]
    getter: Callable[[dict[str, Any]], tuple[Any, ...]]  # every column, in order
    insert_sql: str
    delete_sql: str


def table_shape(db: sqlite3.Connection, table: str) -> TableShape:
    name, cols = table_columns(db, table)
    quoted = ", ".join(f'"{c}"' for c in cols)
    where = " AND ".join(f'"{c}" IS ?' for c in cols)
    return TableShape(
        table=table,
        name=name,
        cols=cols,
        lower={c.lower(): c for c in cols},
        exact=frozenset(cols),
        getter=operator.itemgetter(*cols),
        insert_sql=f'INSERT INTO "{name}" ({quoted}) VALUES ({", ".join("?" for _ in cols)})',
        delete_sql=(
            f'DELETE FROM "{name}" WHERE rowid = (SELECT rowid FROM "{name}" WHERE {where} LIMIT 1)'
        ),
    )


Rows = list[tuple[Any, ...]]


def check_update_format(update_format: str) -> None:
    if update_format not in ("raw", "insert_delete"):
        raise DataError(
            400,
            "UnsupportedFormat",
            f"update_format '{update_format}' is not supported: use 'raw' or 'insert_delete'",
            {"update_format": update_format},
        )


def to_rows(
    shape: TableShape, update_format: str, updates: list[Any], first_index: int = 0
) -> tuple[Rows, Rows]:
    """Checks the updates against the table: (rows to insert, rows to delete).

    `first_index` is the index of updates[0] in the whole request (for messages).
    """
    cols, table = shape.cols, shape.table
    if update_format == "raw":
        # The common case, checked in bulk at C speed: every update is a row
        # whose keys are column names spelled as declared. Nested values need
        # no check here: SQLite refuses to bind them (see apply).
        if all(type(row) is dict and row.keys() <= shape.exact for row in updates):
            width = len(cols)
            if width > 1 and all(len(row) == width for row in updates):
                return list(map(shape.getter, updates)), []  # every column given
            return [tuple(map(row.get, cols)) for row in updates], []
        return [
            _row_values(row, cols, shape.lower, table, first_index + i)
            for i, row in enumerate(updates)
        ], []
    check_update_format(update_format)
    inserts: Rows = []
    deletes: Rows = []
    for i, update in enumerate(updates, first_index):
        if (
            not isinstance(update, dict)
            or len(update) != 1
            or not (update.keys() <= {"insert", "delete"})
        ):
            raise _bad(table, i, 'an update must be {"insert": row} or {"delete": row}')
        ((kind, row),) = update.items()
        target = inserts if kind == "insert" else deletes
        target.append(_row_values(row, cols, shape.lower, table, i))
    return inserts, deletes


def _rollback(db: sqlite3.Connection) -> None:
    # SQLite ends some failed transactions itself (a full database does).
    if db.in_transaction:
        db.execute("ROLLBACK")


def apply(
    db: sqlite3.Connection,
    shape: TableShape,
    inserts: Iterable[Rows],
    deletes: Iterable[Rows],
) -> int:
    """Inserts then deletes the rows in one transaction; returns how many were applied."""
    count = 0
    # One transaction: all or nothing. The connection is in autocommit mode
    # (isolation_level=None), so the transaction is explicit.
    db.execute("BEGIN")
    try:
        for rows in inserts:
            db.executemany(shape.insert_sql, rows)
            count += len(rows)
        for rows in deletes:
            db.executemany(shape.delete_sql, rows)
            count += len(rows)
    except sqlite3.Error as exc:
        _rollback(db)
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            raise out_of_room(str(exc)) from exc
        message = str(exc)
        if "is not supported" in message:  # a dict or list bound as a value
            message = f"a column holds a nested value (objects and arrays are not supported): {exc}"
        raise _bad(shape.table, None, message) from exc
    except BaseException:
        _rollback(db)
        raise
    db.execute("COMMIT")
    return count


def ingest(db: sqlite3.Connection, table: str, update_format: str, array: bool, data: bytes) -> int:
    """A whole body at once: checks every update, then applies them in one transaction."""
    check_update_format(update_format)
    shape = table_shape(db, table)
    inserts, deletes = to_rows(shape, update_format, parse_updates(data, array, table))
    return apply(db, shape, [inserts], [deletes])
