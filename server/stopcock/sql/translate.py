"""Feldera queries in SQLite's SQL: names resolved by Feldera's rules, every one quoted."""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp
from sqlglot.errors import SqlglotError
from stopcock.sql.dialect import SQLiteTarget
from stopcock.sql.schema import Compiled, canonical, span_of


def translate(
    compiled: Compiled,
    query: exp.Expr,
    fail: Callable[..., None],
    code: str = "",
    refuse_unmaterialized: bool = False,
) -> str:
    """A Feldera query in SQLite's SQL: names resolved by Feldera's rules, all quoted.

    A relation it reads that the program does not declare fails with
    Calcite's message ("Object 'x' not found").
    """
    query = query.copy()
    # Names a WITH clause of the query defines: not the program's relations.
    ctes = {
        canonical(alias.this)[0]
        for c in query.find_all(exp.CTE)
        if isinstance(alias := c.args.get("alias"), exp.TableAlias)
        and isinstance(alias.this, exp.Identifier)
    }
    for table in query.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            continue
        name, case_sensitive = canonical(table.this)
        if not table.args.get("db") and name in ctes:
            continue
        rel = compiled.find(name, case_sensitive)
        if rel is None or table.args.get("db"):
            where = span_of(code, table.this).calcite_prefix()
            fail(f"{where}Object '{table.this.this}' not found", table.this)
            continue
        if refuse_unmaterialized and not rel.materialized:
            fail(
                "Tried to SELECT from a non-materialized source. Make sure "
                f"`{rel.name}` is configured as materialized: use `with ('materialized' = "
                "'true')` for tables, or `create materialized view` for views",
                table.this,
            )
        table.this.set("this", rel.name)
        table.this.set("quoted", True)
    for ident in query.find_all(exp.Identifier):
        if not ident.quoted:
            ident.set("this", ident.this.lower())
            ident.set("quoted", True)
    try:
        return query.sql(dialect=SQLiteTarget)
    except SqlglotError as exc:
        fail(f"Cannot translate the query to SQLite: {exc}", query)
        raise AssertionError from exc  # fail raises
