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
approximated by the names in its text (sqlglot's tokens): a false positive only makes a
view show as modified, and views are recomputed either way.

A database records the program it holds (a hash of its text in the SQLite
header's application_id and user_version, `stamp`): a checkpoint of the same
program is restored as it is, with nothing compared. A checkpoint without a
stamp was written before bootstrapping existed, when the program's SQL was
run as written; its tables are compared by their columns (name, type
affinity, NOT NULL, key) instead of their text, and its views are kept (they
hold no rows), so upgrading Stopcock changes nothing in a pipeline's data.

Nothing here touches the checkpoint files: the rewrite happens on the
restored in-memory database, so a crash during it leaves the checkpoint as it
was and the next start bootstraps again.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from typing import Any

from sqlglot.dialects.sqlite import SQLite
from sqlglot.tokenizer_core import TokenType
from stopcock.program import load_program

_SQLITE = SQLite()


@dataclass(frozen=True, slots=True)
class Relation:
    kind: str  # "table", "view" or "index"
    name: str
    sql: str
    columns: str = ""  # a table's columns: names, type affinities, NOT NULL, key positions


def _affinity(declared: str) -> str:
    """SQLite's column affinity of a declared type (its documented rules, in order)."""
    t = declared.upper()
    if "INT" in t:
        return "INTEGER"
    if any(k in t for k in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if not t or "BLOB" in t:
        return "BLOB"
    if any(k in t for k in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _columns(db: sqlite3.Connection, table: str) -> str:
    rows = db.execute(
        'SELECT name, type, "notnull", pk FROM pragma_table_info(?) ORDER BY cid', (table,)
    ).fetchall()
    return ";".join(f"{n.lower()}|{_affinity(t or '')}|{nn}|{pk}" for n, t, nn, pk in rows)


def program_stamp(program: str) -> tuple[int, int]:
    """The (application_id, user_version) that stands for `program`; its application_id
    is never 0, which marks a database from before stamps (older runtimes wrote
    user_version 1 and left application_id alone)."""
    digest = hashlib.sha256(program.encode()).digest()
    app = int.from_bytes(digest[:4], "big", signed=True) or 1
    return app, int.from_bytes(digest[4:8], "big", signed=True)


def stamp(db: sqlite3.Connection, program: str) -> None:
    """Records in `db` that it holds `program` (checkpoints copy the header along)."""
    app, version = program_stamp(program)
    db.execute(f"PRAGMA application_id = {app}")
    db.execute(f"PRAGMA user_version = {version}")


def stamped(db: sqlite3.Connection) -> tuple[int, int]:
    """The stamp `db` carries; application_id 0 for a database from before stamps."""
    app = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    return int(app), int(version)


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
    legacy: bool = False  # a checkpoint from before stamps (see the module's docstring)

    @property
    def needs_rewrite(self) -> bool:
        """True when the schema differs at all (indexes included), diff or not; for a
        legacy checkpoint, only when the diff is not empty (its SQL is as written)."""
        if self.legacy:
            return not self.diff.empty
        return _definitions(self.old) != _definitions(self.new)


def _same_table(old: Relation, new: Relation, legacy: bool) -> bool:
    return old.columns == new.columns if legacy else old.sql == new.sql


def _unchanged_tables(
    old: tuple[Relation, ...], new: tuple[Relation, ...], legacy: bool
) -> set[str]:
    old_tables, new_tables = _names(old, "table"), _names(new, "table")
    return {
        k
        for k, t in new_tables.items()
        if k in old_tables and _same_table(old_tables[k], t, legacy)
    }


def schema(db: sqlite3.Connection) -> tuple[Relation, ...]:
    """The user's tables, views and indexes of `db`, in creation order."""
    rows = db.execute(
        "SELECT type, name, sql FROM sqlite_schema "
        "WHERE type IN ('table', 'view', 'index') AND sql IS NOT NULL "
        "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
    ).fetchall()
    return tuple(
        Relation(kind, name, sql, _columns(db, name) if kind == "table" else "")
        for kind, name, sql in rows
    )


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
    """Every name in a view's SQLite text (lowercased), by sqlglot's SQLite tokenizer:
    quoted names, and any word that could name a relation (keywords included, as a
    table may be named like one). A superset of what the view reads."""
    return {
        t.text.lower()
        for t in _SQLITE.tokenize(sql)
        if t.token_type == TokenType.IDENTIFIER
        or (t.token_type != TokenType.STRING and t.text.replace("$", "_").isidentifier())
    }


def _names(relations: tuple[Relation, ...], kind: str) -> dict[str, Relation]:
    return {r.name.lower(): r for r in relations if r.kind == kind}


def compare(
    old: tuple[Relation, ...], new: tuple[Relation, ...], legacy: bool = False
) -> ProgramDiff:
    """The diff between a checkpoint's schema (`old`) and the program's (`new`).

    `legacy`: tables compare by their columns, and a view's text is not
    compared (the old text is the program as written, not as translated)."""
    old_tables, new_tables = _names(old, "table"), _names(new, "table")
    old_views, new_views = _names(old, "view"), _names(new, "view")
    unchanged = _unchanged_tables(old, new, legacy)
    added_tables = [t.name for k, t in new_tables.items() if k not in old_tables]
    removed_tables = [t.name for k, t in old_tables.items() if k not in new_tables]
    modified_tables = [
        t.name for k, t in new_tables.items() if k in old_tables and k not in unchanged
    ]
    added_views = [v.name for k, v in new_views.items() if k not in old_views]
    removed_views = [v.name for k, v in old_views.items() if k not in new_views]
    modified = {
        k
        for k, v in new_views.items()
        if k in old_views and not legacy and old_views[k].sql != v.sql
    }
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
    legacy = stamped(db)[0] == 0
    return Plan(compare(old, new, legacy), old, new, legacy)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def apply(db: sqlite3.Connection, p: Plan) -> None:
    """Rewrites the restored `db` to the new program's schema, in one transaction.

    Unchanged tables keep their rows; changed and new tables are created
    empty; removed tables are dropped; every index and view is dropped and
    made again from the new program (a view holds no rows: it is recomputed
    when read).
    """
    keep = _unchanged_tables(p.old, p.new, p.legacy)
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
    new_tables = _names(p.new, "table")
    views = _names(p.new, "view")
    unchanged = _unchanged_tables(p.old, p.new, p.legacy)
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
