"""Rows in and out of the pipeline's database (runs on the database thread).

Ingest parses the JSON updates, checks every one against the table's
columns, and applies them in one transaction: a bad update rejects the whole
request and changes nothing. Queries run under an authorizer that allows
reads only, so a statement that writes is refused by SQLite itself.
"""

from __future__ import annotations

import base64
import json
import math
import sqlite3
from typing import Any

READ_ONLY_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
QUERY_CHUNK_ROWS = 1000


class DataError(Exception):
    """A refusal in the contract's terms: HTTP status, error code, details."""

    def __init__(self, http_status: int, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message
        self.details = details


def _bad(table: str, index: int | None, error: str) -> DataError:
    where = "" if index is None else f" (update {index})"
    return DataError(
        400,
        "InvalidIngressData",
        f"Invalid input for table '{table}'{where}: {error}; nothing was ingested",
        {"table": table, "update_index": index, "error": error},
    )


def table_columns(db: sqlite3.Connection, table: str) -> tuple[str, list[str]]:
    """The table's real name and its columns (names matched case-insensitively)."""
    row = db.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = ? COLLATE NOCASE",
        (table,),
    ).fetchone()
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


def parse_updates(data: bytes, array: bool, table: str) -> list[Any]:
    try:
        if array:
            updates = json.loads(data)
            if not isinstance(updates, list):
                raise _bad(table, None, "with array=true the body must be a JSON array")
            return updates
        return [json.loads(line) for line in data.splitlines() if line.strip()]
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(table, None, f"malformed JSON: {exc}") from exc


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


def ingest(db: sqlite3.Connection, table: str, update_format: str, array: bool, data: bytes) -> int:
    """Applies the updates in one transaction; returns how many were applied."""
    name, cols = table_columns(db, table)
    lower = {c.lower(): c for c in cols}
    updates = parse_updates(data, array, table)
    quoted = ", ".join(f'"{c}"' for c in cols)
    insert_sql = f'INSERT INTO "{name}" ({quoted}) VALUES ({", ".join("?" for _ in cols)})'
    inserts: list[tuple[Any, ...]] = []
    deletes: list[tuple[Any, ...]] = []
    if update_format == "raw":
        exact = frozenset(cols)
        # The common case, checked in bulk at C speed: every update is a row
        # whose keys are column names spelled as declared. Nested values need
        # no check here: SQLite refuses to bind them (caught below).
        if all(type(row) is dict and row.keys() <= exact for row in updates):
            inserts = [tuple(map(row.get, cols)) for row in updates]
        else:
            inserts = [_row_values(row, cols, lower, table, i) for i, row in enumerate(updates)]
    elif update_format == "insert_delete":
        for i, update in enumerate(updates):
            if (
                not isinstance(update, dict)
                or len(update) != 1
                or not (update.keys() <= {"insert", "delete"})
            ):
                raise _bad(table, i, 'an update must be {"insert": row} or {"delete": row}')
            ((kind, row),) = update.items()
            target = inserts if kind == "insert" else deletes
            target.append(_row_values(row, cols, lower, table, i))
    else:
        raise DataError(
            400,
            "UnsupportedFormat",
            f"update_format '{update_format}' is not supported: use 'raw' or 'insert_delete'",
            {"update_format": update_format},
        )
    where = " AND ".join(f'"{c}" IS ?' for c in cols)
    delete_sql = (
        f'DELETE FROM "{name}" WHERE rowid = (SELECT rowid FROM "{name}" WHERE {where} LIMIT 1)'
    )
    # One transaction: all or nothing. The connection is in autocommit mode
    # (isolation_level=None), so the transaction is explicit.
    db.execute("BEGIN")
    try:
        if inserts:
            db.executemany(insert_sql, inserts)
        if deletes:
            db.executemany(delete_sql, deletes)
    except sqlite3.Error as exc:
        db.execute("ROLLBACK")
        message = str(exc)
        if "is not supported" in message:  # a dict or list bound as a value
            message = f"a column holds a nested value (objects and arrays are not supported): {exc}"
        raise _bad(table, None, message) from exc
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return len(inserts) + len(deletes)


def _read_only(action: int, *_: str | None) -> int:
    return sqlite3.SQLITE_OK if action in READ_ONLY_ACTIONS else sqlite3.SQLITE_DENY


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, float) and not math.isfinite(value):  # JSON has no NaN/inf
        return None
    return value


def query(db: sqlite3.Connection, sql: str) -> list[bytes]:
    """The query's rows as NDJSON chunks of up to QUERY_CHUNK_ROWS rows."""
    db.set_authorizer(_read_only)
    try:
        cursor = db.execute(sql)
        names = [d[0] for d in cursor.description or ()]
        chunks = []
        while rows := cursor.fetchmany(QUERY_CHUNK_ROWS):
            lines = [
                json.dumps(dict(zip(names, map(_jsonable, row), strict=True)), allow_nan=False)
                for row in rows
            ]
            chunks.append(("\n".join(lines) + "\n").encode())
        return chunks
    except (sqlite3.Error, sqlite3.Warning, ValueError) as exc:
        message = str(exc)
        if message == "not authorized":
            message = "not authorized: a query may only read (SELECT)"
        raise DataError(
            400, "InvalidQuery", f"Invalid query: {message}", {"error": message}
        ) from exc
    finally:
        db.set_authorizer(None)
