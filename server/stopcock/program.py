"""The pipeline program: "compiling" it (manager) and loading it (runtime).

"Compiling" a program: validating its SQL and describing its schema.

A program is SQLite DDL: CREATE TABLE and CREATE VIEW statements (indexes are
allowed too). It is run on a throwaway in-memory database under an
authorizer that permits only schema creation and reads, so a program cannot
ATTACH files, change pragmas or write rows. Success yields `program_info`
with the tables (inputs) and views (outputs) in Feldera's shape; failure
yields `program_error.sql_compilation` with the engine's message.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from stopcock.contract.program import empty_program_error

JsonObject = dict[str, Any]


_ALLOWED = {
    sqlite3.SQLITE_CREATE_TABLE,
    sqlite3.SQLITE_CREATE_VIEW,
    sqlite3.SQLITE_CREATE_INDEX,
    sqlite3.SQLITE_INSERT,  # CREATE TABLE writes sqlite_master
    sqlite3.SQLITE_UPDATE,  # ... and so may CREATE INDEX
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_TRANSACTION,
}
_SCHEMA_TABLES = {"sqlite_master", "sqlite_schema", "sqlite_temp_master"}


@dataclass(frozen=True, slots=True)
class CompileResult:
    ok: bool
    program_info: JsonObject | None
    program_error: JsonObject


def _authorizer(
    action: int, arg1: str | None, _a2: str | None, _db: str | None, _t: str | None
) -> int:
    if action not in _ALLOWED:
        return sqlite3.SQLITE_DENY
    # Row writes are only allowed to SQLite's own schema table.
    if action in (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE) and arg1 not in _SCHEMA_TABLES:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def load_program(db: sqlite3.Connection, program: str) -> None:
    """Runs `program` on `db` under the DDL-only authorizer (raises sqlite3.Error)."""
    db.set_authorizer(_authorizer)
    try:
        db.executescript(program)
    finally:
        db.set_authorizer(None)


def _columns(db: sqlite3.Connection, name: str) -> list[JsonObject]:
    cols = db.execute('SELECT name, type, "notnull" FROM pragma_table_info(?)', (name,))
    return [
        {
            "name": col_name,
            "case_sensitive": False,
            "columntype": {"type": (col_type or "ANY").upper(), "nullable": not notnull},
        }
        for col_name, col_type, notnull in cols.fetchall()
    ]


def describe(db: sqlite3.Connection) -> JsonObject:
    """program_info: the schema in the shape Feldera's clients read."""
    rows = db.execute(
        "SELECT type, name FROM sqlite_schema WHERE type IN ('table', 'view') "
        "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
    ).fetchall()
    inputs: list[JsonObject] = []
    outputs: list[JsonObject] = []
    for kind, name in rows:
        entry = {
            "name": name,
            "case_sensitive": False,
            "materialized": kind == "table",
            "fields": _columns(db, name),
            "properties": {},
        }
        (inputs if kind == "table" else outputs).append(entry)
    return {
        "schema": {"inputs": inputs, "outputs": outputs},
        "input_connectors": {},
        "output_connectors": {},
    }


def compile_program(program: str) -> CompileResult:
    db = sqlite3.connect(":memory:")
    try:
        load_program(db, program)
        # Views are only checked when read: prepare each one now so that a
        # view over a missing column fails here, not at runtime.
        for (view,) in db.execute("SELECT name FROM sqlite_schema WHERE type = 'view'").fetchall():
            db.execute(f'SELECT * FROM "{view}" LIMIT 0')
        return CompileResult(True, describe(db), empty_program_error())
    except sqlite3.Error as exc:
        error = empty_program_error()
        message = str(exc)
        if message == "not authorized":
            message = (
                "not authorized: a program may only contain CREATE TABLE, CREATE VIEW and "
                "CREATE INDEX statements"
            )
        error["sql_compilation"] = {
            "exit_code": 1,
            "messages": [
                {
                    "start_line_number": 0,
                    "start_column": 0,
                    "end_line_number": 0,
                    "end_column": 0,
                    "warning": False,
                    "error_type": "SqlError",
                    "message": message,
                    "snippet": "",
                }
            ],
        }
        return CompileResult(False, None, error)
    finally:
        db.close()
