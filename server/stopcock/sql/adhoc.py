"""Ad-hoc statements: Feldera SQL read against the program's relations, run on SQLite.

As Feldera (crates/adapters/src/adhoc/table.rs), a query may read only
materialized tables and views: `WITH ('materialized' = 'true')` tables and
`CREATE MATERIALIZED VIEW` views; anything else is refused with Feldera's
message.

`INSERT INTO t [(cols)] VALUES (...), ...` is the one writing statement
taken (Feldera's ad-hoc engine, DataFusion, runs INSERT and refuses DDL; see
crates/adapters/src/adhoc.rs). Any table may be inserted into, materialized
or not. Its rows are literals: they are handed to the ingress path as JSON
rows, which checks them as it checks any ingress (see runtime/engine.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, NoReturn

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from stopcock.sql.dialect import Feldera
from stopcock.sql.schema import Compiled, Relation, canonical
from stopcock.sql.translate import translate


class QueryRefused(Exception):
    """The query cannot run: the message says why."""


@dataclass(frozen=True, slots=True)
class Insert:
    """An ad-hoc INSERT: rows of literal values for the table's columns."""

    table: str  # the table's declared name (exact)
    rows: list[dict[str, Any]]  # column (declared name) -> value; a missing column is NULL


def _refuse(message: str, *_: Any) -> NoReturn:
    raise QueryRefused(message)


def parse(compiled: Compiled, sql: str) -> str | Insert:
    """`sql` (one Feldera statement): a SELECT in SQLite's SQL, or an Insert.

    QueryRefused if it cannot run.
    """
    try:
        statements = [s for s in sqlglot.parse(sql, read=Feldera) if s is not None]
    except SqlglotError as exc:
        raise QueryRefused(f"SQL error: {exc}") from None
    statements = [s for s in statements if not isinstance(s, exp.Semicolon)]
    if len(statements) != 1:
        raise QueryRefused(
            "a request is exactly one statement (a SELECT or an INSERT): Stopcock does not "
            "run several statements in one request"
        )
    (statement,) = statements
    if isinstance(statement, exp.Insert):
        return _insert(compiled, statement)
    if not isinstance(statement, exp.Query):
        kind = type(statement).__name__.upper()
        raise QueryRefused(
            f"not authorized: {kind} is not supported; an ad-hoc query may only read "
            "(SELECT) or insert rows (INSERT INTO ... VALUES)"
        )
    return translate(compiled, statement, _refuse, sql, refuse_unmaterialized=True)


def to_sqlite(compiled: Compiled, sql: str) -> str:
    """`sql` (one Feldera query) in SQLite's SQL; QueryRefused if it cannot run or writes."""
    statement = parse(compiled, sql)
    if isinstance(statement, Insert):
        raise QueryRefused("not authorized: a query may only read (SELECT)")
    return statement


def _insert(compiled: Compiled, insert: exp.Insert) -> Insert:
    target = insert.this
    named: list[exp.Identifier] | None = None
    if isinstance(target, exp.Schema):
        named = [c for c in target.expressions if isinstance(c, exp.Identifier)]
        target = target.this
    if not isinstance(target, exp.Table) or not isinstance(target.this, exp.Identifier):
        raise QueryRefused("INSERT names no table")
    name, case_sensitive = canonical(target.this)
    rel = None if target.args.get("db") else compiled.find(name, case_sensitive)
    if rel is None or rel.kind != "table":
        what = "a view: only tables take INSERT" if rel is not None else "not found"
        raise QueryRefused(f"table '{target.this.this}' {what}")
    columns = _columns(rel, named)
    values = insert.expression
    if not isinstance(values, exp.Values):
        raise QueryRefused(
            "INSERT ... SELECT is not supported by Stopcock: list the rows with VALUES"
        )
    rows = []
    for number, row in enumerate(values.expressions, 1):
        items = row.expressions if isinstance(row, exp.Tuple) else [row]
        if len(items) != len(columns):
            raise QueryRefused(
                f"row {number} of the INSERT has {len(items)} value(s) for "
                f"{len(columns)} column(s) of table '{rel.name}'"
            )
        rows.append({col: _literal(item) for col, item in zip(columns, items, strict=True)})
    return Insert(rel.name, rows)


def _columns(rel: Relation, named: list[exp.Identifier] | None) -> list[str]:
    """The declared names of the columns the INSERT gives values for."""
    if named is None:
        return [f.name for f in rel.fields]
    columns = []
    for ident in named:
        name, _ = canonical(ident)
        # Unquoted names were lowercased (canonical), as unquoted declarations
        # were: one comparison applies Feldera's rules.
        found = next((f.name for f in rel.fields if f.name == name), None)
        if found is None:
            raise QueryRefused(f"table '{rel.name}' has no column '{ident.this}'")
        if found in columns:
            raise QueryRefused(f"column '{found}' is named twice in the INSERT")
        columns.append(found)
    return columns


_INTEGER = re.compile(r"[0-9]+")


def _literal(node: exp.Expr) -> Any:
    """A literal's value, as a JSON ingress row would hold it."""
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
        value = _literal(node.this)
        if not isinstance(value, str):
            return -value
    if isinstance(node, exp.Literal):
        if node.is_string:
            return str(node.this)
        text = str(node.this)
        if _INTEGER.fullmatch(text):
            return int(text)
        number = float(text)
        if math.isfinite(number):
            return number
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.this.is_string:
        # DATE '2020-01-01', TIMESTAMP '...': the text, as JSON ingress takes it.
        return str(node.this.this)
    raise QueryRefused(
        f"INSERT takes literal values only (numbers, strings, TRUE/FALSE, NULL, "
        f"DATE/TIME/TIMESTAMP '...'), not '{node.sql(dialect=Feldera)}'"
    )
