"""Bootstrapping: a checkpoint of one program restored under another.

Feldera lets a pipeline's program change while its storage is in use; the
next start restores the checkpoint and "bootstraps" the change: tables whose
definition is unchanged keep their rows, changed and new tables start empty,
removed ones go, and every view is computed afresh from the new program.
Before doing so it follows the deployment's bootstrap policy (`allow`,
`reject`, `await_approval`); the engine does that part, this module only
compares and rewrites schemas.

A relation's definition is the SQLite DDL text that sqlite_schema keeps for
it. The program loader (`stopcock.program.load_program`) produces it
deterministically from the program, so equal text means an equal table. The
new program's schema is taken by loading it into a throwaway database, so
whatever the loader does (today SQLite DDL as written; a translator from
Feldera SQL tomorrow) is what gets compared.

A view is modified when its text changed, or when a relation it reads was
added, removed or modified (its contents would differ even though its text
did not), as Feldera marks a view whose inputs changed. What a view reads is
approximated by the identifiers in its text: a false positive only makes a
view show as modified, and views are recomputed either way.

Nothing here touches the checkpoint files: the rewrite happens on the
restored in-memory database, so a crash during it leaves the checkpoint as it
was and the next start bootstraps again.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import Any

from stopcock.program import load_program

_IDENTIFIER = re.compile(r'"((?:[^"]|"")+)"|`([^`]+)`|\[([^\]]+)\]|([A-Za-z_][A-Za-z0-9_$]*)')


@dataclass(frozen=True, slots=True)
class Relation:
    kind: str  # "table", "view" or "index"
    name: str
    sql: str


@dataclass(frozen=True, slots=True)
class ProgramDiff:
    """Feldera's `ProgramDiff`: the relations a bootstrap changes, by name."""

    added_tables: tuple[str, ...] = ()
    removed_tables: tuple[str, ...] = ()
    modified_tables: tuple[str, ...] = ()
    added_views: tuple[str, ...] = ()
    removed_views: tuple[str, ...] = ()
    modified_views: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not any(
            (
                self.added_tables,
                self.removed_tables,
                self.modified_tables,
                self.added_views,
                self.removed_views,
                self.modified_views,
            )
        )

    def program_diff(self) -> dict[str, list[str]]:
        """The JSON of Feldera's ProgramDiff (its field names, sorted lists)."""
        return {
            "added_tables": sorted(self.added_tables),
            "removed_tables": sorted(self.removed_tables),
            "modified_tables": sorted(self.modified_tables),
            "added_views": sorted(self.added_views),
            "removed_views": sorted(self.removed_views),
            "modified_views": sorted(self.modified_views),
        }

    def pipeline_diff(self) -> dict[str, Any]:
        """Feldera's `PipelineDiff`, what `approval_diff` holds (Stopcock has no connectors)."""
        return {
            "program_diff": self.program_diff(),
            "program_diff_error": None,
            "added_input_connectors": [],
            "modified_input_connectors": [],
            "removed_input_connectors": [],
            "added_output_connectors": [],
            "modified_output_connectors": [],
            "removed_output_connectors": [],
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """What restoring a checkpoint under the current program takes."""

    diff: ProgramDiff
    old: tuple[Relation, ...]
    new: tuple[Relation, ...]

    @property
    def needs_rewrite(self) -> bool:
        """True when the schema differs at all (indexes included), diff or not."""
        return _definitions(self.old) != _definitions(self.new)


def schema(db: sqlite3.Connection) -> tuple[Relation, ...]:
    """The user's tables, views and indexes of `db`, in creation order."""
    rows = db.execute(
        "SELECT type, name, sql FROM sqlite_schema "
        "WHERE type IN ('table', 'view', 'index') AND sql IS NOT NULL "
        "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
    ).fetchall()
    return tuple(Relation(kind, name, sql) for kind, name, sql in rows)


def program_schema(program: str) -> tuple[Relation, ...]:
    """The schema the program loader makes of `program` (raises sqlite3.Error)."""
    db = sqlite3.connect(":memory:")
    try:
        load_program(db, program)
        return schema(db)
    finally:
        db.close()


def _definitions(relations: tuple[Relation, ...]) -> dict[tuple[str, str], str]:
    return {(r.kind, r.name.lower()): r.sql for r in relations}


def _identifiers(sql: str) -> set[str]:
    found: set[str] = set()
    for match in _IDENTIFIER.finditer(sql):
        quoted, backtick, bracket, bare = match.groups()
        name = quoted.replace('""', '"') if quoted else backtick or bracket or bare
        found.add(name.lower())
    return found


def _names(relations: tuple[Relation, ...], kind: str) -> dict[str, Relation]:
    return {r.name.lower(): r for r in relations if r.kind == kind}


def compare(old: tuple[Relation, ...], new: tuple[Relation, ...]) -> ProgramDiff:
    """The diff between a checkpoint's schema (`old`) and the program's (`new`)."""
    old_tables, new_tables = _names(old, "table"), _names(new, "table")
    old_views, new_views = _names(old, "view"), _names(new, "view")
    added_tables = [t.name for k, t in new_tables.items() if k not in old_tables]
    removed_tables = [t.name for k, t in old_tables.items() if k not in new_tables]
    modified_tables = [
        t.name for k, t in new_tables.items() if k in old_tables and old_tables[k].sql != t.sql
    ]
    added_views = [v.name for k, v in new_views.items() if k not in old_views]
    removed_views = [v.name for k, v in old_views.items() if k not in new_views]
    modified = {k for k, v in new_views.items() if k in old_views and old_views[k].sql != v.sql}
    changed = {n.lower() for n in (*added_tables, *removed_tables, *modified_tables)}
    changed |= {n.lower() for n in (*added_views, *removed_views)} | modified
    # Views read views: follow the chain until no more views change.
    while True:
        more = {
            k
            for k, v in new_views.items()
            if k in old_views and k not in modified and _identifiers(v.sql) & changed
        }
        if not more:
            break
        modified |= more
        changed |= more
    return ProgramDiff(
        added_tables=tuple(added_tables),
        removed_tables=tuple(removed_tables),
        modified_tables=tuple(modified_tables),
        added_views=tuple(added_views),
        removed_views=tuple(removed_views),
        modified_views=tuple(v.name for k, v in new_views.items() if k in modified),
    )


def plan(db: sqlite3.Connection, program: str) -> Plan:
    """Compares the restored `db` with `program` (raises sqlite3.Error)."""
    old, new = schema(db), program_schema(program)
    return Plan(compare(old, new), old, new)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def apply(db: sqlite3.Connection, p: Plan) -> None:
    """Rewrites the restored `db` to the new program's schema, in one transaction.

    Unchanged tables keep their rows; changed and new tables are created
    empty; removed tables are dropped; every index and view is dropped and
    made again from the new program (a view holds no rows: it is recomputed
    when read).
    """
    old_tables = _names(p.old, "table")
    new_tables = _names(p.new, "table")
    keep = {k for k, t in new_tables.items() if k in old_tables and old_tables[k].sql == t.sql}
    db.execute("BEGIN IMMEDIATE")
    try:
        for r in reversed(p.old):
            if r.kind == "view":
                db.execute(f"DROP VIEW IF EXISTS {_quoted(r.name)}")
            elif r.kind == "index":
                db.execute(f"DROP INDEX IF EXISTS {_quoted(r.name)}")
        for r in p.old:
            if r.kind == "table" and r.name.lower() not in keep:
                db.execute(f"DROP TABLE IF EXISTS {_quoted(r.name)}")
        # In the program's order, so that a view is made after what it reads.
        for r in p.new:
            if r.kind == "table" and r.name.lower() in keep:
                continue
            db.execute(r.sql)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def non_materialized_sources(p: Plan, materialized: set[str]) -> list[str]:
    """Unchanged tables outside `materialized` that a view to be bootstrapped reads.

    Feldera keeps no contents for a table that is not materialized, so it
    cannot replay one into a new or modified view and refuses the bootstrap
    (controller.rs, non_materialized_replay_sources). Stopcock's tables all
    hold their rows, but it refuses the same programs, so that a program
    behaves alike on both. Tables that changed start empty: nothing to replay.
    """
    old_tables, new_tables = _names(p.old, "table"), _names(p.new, "table")
    views = _names(p.new, "view")
    unchanged = {k for k, t in new_tables.items() if k in old_tables and old_tables[k].sql == t.sql}
    pending = [n.lower() for n in (*p.diff.added_views, *p.diff.modified_views)]
    seen: set[str] = set()
    sources: set[str] = set()
    while pending:
        view = pending.pop()
        if view in seen or view not in views:
            continue
        seen.add(view)
        for name in _identifiers(views[view].sql):
            if name in views:
                pending.append(name)
            elif name in unchanged and name not in materialized:
                sources.add(new_tables[name].name)
    return sorted(sources)
