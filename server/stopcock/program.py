"""The pipeline program: "compiling" it (manager) and loading it (runtime).

A program is Feldera SQL: CREATE TABLE (with WITH properties), CREATE
[MATERIALIZED | LOCAL] VIEW, CREATE INDEX. stopcock.sql.compiler parses it
with sqlglot, checks it and translates each statement into SQLite DDL, which
runs under an authorizer that permits only schema creation and reads, so a
program cannot ATTACH files, change pragmas or write rows.

Success yields `program_info` and `program_error` in Feldera's shape (see
stopcock.contract.program); failure yields `program_error.sql_compilation`
with the message, its position and Calcite's code snippet.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from stopcock.contract.program import (
    compiled_program_error,
    empty_program_error,
    sql_compilation,
)
from stopcock.sql.compiler import compile_to
from stopcock.sql.messages import CompileError, Message
from stopcock.sql.schema import Compiled

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
    sqlite3.SQLITE_RECURSIVE,
}
_SCHEMA_TABLES = {"sqlite_master", "sqlite_schema", "sqlite_temp_master"}


@dataclass(frozen=True, slots=True)
class CompileResult:
    ok: bool
    program_info: JsonObject | None
    program_error: JsonObject
    # program_error.sql_compilation alone: what Feldera shows once SQL compiled (SqlCompiled)
    sql_compilation: JsonObject | None = None


def _authorizer(
    action: int, arg1: str | None, _a2: str | None, _db: str | None, _t: str | None
) -> int:
    if action == sqlite3.SQLITE_PRAGMA and arg1 == "table_info":
        return sqlite3.SQLITE_OK  # the compiler reads a view's columns (pragma_table_info)
    if action not in _ALLOWED:
        return sqlite3.SQLITE_DENY
    # Row writes are only allowed to SQLite's own schema table.
    if action in (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE) and arg1 not in _SCHEMA_TABLES:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _compile_on(db: sqlite3.Connection, program: str) -> Compiled:
    db.set_authorizer(_authorizer)
    try:
        return compile_to(program, db, lambda ddl: db.execute(ddl).close())
    finally:
        db.set_authorizer(None)


def load_program(db: sqlite3.Connection, program: str) -> Compiled:
    """Installs `program` (Feldera SQL) on `db`: its tables, views and indexes.

    THE entry point the runtime uses. Raises sqlite3.Error when the program
    does not compile (a compiled pipeline's program always does).
    """
    try:
        return _compile_on(db, program)
    except CompileError as exc:
        raise sqlite3.OperationalError(str(exc)) from exc


def catalog(program: str) -> Compiled:
    """The program's relations (names, materialization, SQLite DDL), compiled on a scratch db."""
    db = sqlite3.connect(":memory:")
    try:
        return _compile_on(db, program)
    finally:
        db.close()


def table_ddl(program: str) -> dict[str, str]:
    """Each table's SQLite DDL by name: deterministic, for comparing program versions."""
    return {r.name: r.sqlite_ddl for r in catalog(program).relations if r.kind == "table"}


def rust_udf_error(udf_rust: str) -> JsonObject | None:
    """program_error.rust_compilation of Rust UDF code (Stopcock builds none); None if none."""
    if not udf_rust.strip():
        return None
    return {
        "exit_code": 1,
        "stdout": "",
        "stderr": "error: Stopcock's engine runs no Rust: user-defined functions in udf_rust "
        f"are not supported. udf_rust:\n{udf_rust}",
    }


def compile_program(program: str) -> CompileResult:
    try:
        compiled = catalog(program)
    except CompileError as exc:
        error = empty_program_error()
        error["sql_compilation"] = sql_compilation(1, [exc.detail.to_json(program)])
        return CompileResult(False, None, error)
    except (sqlite3.Error, RecursionError) as exc:  # a bug or limit: still the program's fault
        error = empty_program_error()
        error["sql_compilation"] = sql_compilation(1, [Message(str(exc)).to_json(program)])
        return CompileResult(False, None, error)
    messages = [w.to_json(program) for w in compiled.warnings]
    return CompileResult(
        True,
        compiled.program_info(),
        compiled_program_error(messages),
        sql_compilation(0, messages),
    )


# Feldera's answer to a custom runtime version without its runtime_version
# feature (compiler/sql_compiler.rs, validate_program).
_NO_RUNTIME_VERSION = (
    "A custom runtime version was requested, but this Feldera instance does not have the "
    "'runtime_version' feature enabled."
)


def validate_program(program: str, runtime_version: str | None = None) -> JsonObject:
    """Feldera's ValidateProgramResponse for `program` (POST /v0/validate_program).

    As Feldera: the program_info without the Rust artifacts (main_rust,
    udf_stubs) and with `dataflow` null (Stopcock has no IR to give).
    """
    if runtime_version is not None:
        return {"SystemError": {"error": _NO_RUNTIME_VERSION}}
    result = compile_program(program)
    if not result.ok or result.program_info is None:
        return {"SqlError": {"info": result.program_error["sql_compilation"]}}
    info = {k: v for k, v in result.program_info.items() if k not in ("main_rust", "udf_stubs")}
    return {"Success": {"program_info": {**info, "dataflow": None}}}
