"""Ad-hoc queries: Feldera SQL read against the program's relations, run on SQLite.

As Feldera (crates/adapters/src/adhoc/table.rs), a query may read only
materialized tables and views: `WITH ('materialized' = 'true')` tables and
`CREATE MATERIALIZED VIEW` views; anything else is refused with Feldera's
message.
"""

from __future__ import annotations

from typing import Any, NoReturn

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from stopcock.sql.dialect import Feldera
from stopcock.sql.schema import Compiled
from stopcock.sql.translate import translate


class QueryRefused(Exception):
    """The query cannot run: the message says why."""


def _refuse(message: str, *_: Any) -> NoReturn:
    raise QueryRefused(message)


def to_sqlite(compiled: Compiled, sql: str) -> str:
    """`sql` (one Feldera query) in SQLite's SQL; QueryRefused if it cannot run."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=Feldera) if s is not None]
    except SqlglotError as exc:
        raise QueryRefused(f"SQL error: {exc}") from None
    statements = [s for s in statements if not isinstance(s, exp.Semicolon)]
    if len(statements) != 1:
        raise QueryRefused("a query is exactly one SELECT statement")
    (query,) = statements
    if not isinstance(query, exp.Query):
        raise QueryRefused("not authorized: a query may only read (SELECT)")
    return translate(compiled, query, _refuse, sql, refuse_unmaterialized=True)
