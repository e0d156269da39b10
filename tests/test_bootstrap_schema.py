"""runtime/bootstrap.py on real SQLite files: the diff and the rewrite of a restored database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from stopcock.program import load_program
from stopcock.runtime import bootstrap

OLD = """
CREATE TABLE t1 (x INTEGER);
CREATE TABLE t2 (y INTEGER);
CREATE TABLE gone (z INTEGER);
CREATE VIEW v1 AS SELECT COUNT(*) AS c FROM t1;
CREATE VIEW v2 AS SELECT MAX(y) AS m FROM t2;
CREATE VIEW v3 AS SELECT c FROM v1;
CREATE VIEW vgone AS SELECT * FROM gone;
"""


def _checkpoint(tmp_path: Path, program: str = OLD) -> sqlite3.Connection:
    """A database file as a checkpoint holds it: the program loaded, rows in."""
    path = tmp_path / "checkpoint.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    load_program(db, program)
    bootstrap.stamp(db, program)  # as the runtime does when it loads a program
    db.execute("INSERT INTO t1 VALUES (1), (2), (3)")
    db.execute("INSERT INTO t2 VALUES (10)")
    db.close()
    return sqlite3.connect(path, isolation_level=None)


def test_unchanged_program_has_an_empty_diff_and_needs_no_rewrite(tmp_path: Path) -> None:
    db = _checkpoint(tmp_path)
    p = bootstrap.plan(db, OLD)
    assert p.diff.empty
    assert not p.needs_rewrite


def test_diff_names_added_removed_and_modified_relations(tmp_path: Path) -> None:
    db = _checkpoint(tmp_path)
    new = """
CREATE TABLE t1 (x INTEGER);
CREATE TABLE t2 (y INTEGER, w TEXT);
CREATE TABLE t3 (q INTEGER);
CREATE VIEW v1 AS SELECT COUNT(*) AS c FROM t1;
CREATE VIEW v2 AS SELECT MAX(y) AS m FROM t2;
CREATE VIEW v3 AS SELECT c + 1 AS c FROM v1;
CREATE VIEW v4 AS SELECT * FROM t3;
"""
    diff = bootstrap.plan(db, new).diff
    assert diff.program_diff() == {
        "added_tables": ["t3"],
        "removed_tables": ["gone"],
        "modified_tables": ["t2"],
        "added_views": ["v4"],
        "removed_views": ["vgone"],
        # v2's text is the same, but it reads the modified t2; v3's text changed.
        "modified_views": ["v2", "v3"],
    }


def test_a_view_over_a_modified_view_is_modified_too(tmp_path: Path) -> None:
    db = _checkpoint(tmp_path)
    new = OLD.replace("SELECT COUNT(*) AS c FROM t1", "SELECT SUM(x) AS c FROM t1")
    diff = bootstrap.plan(db, new).diff
    assert diff.modified_views == ("v1", "v3")
    assert diff.modified_tables == ()


def test_apply_keeps_unchanged_tables_and_empties_changed_ones(tmp_path: Path) -> None:
    db = _checkpoint(tmp_path)
    new = """
CREATE TABLE t1 (x INTEGER);
CREATE TABLE t2 (y INTEGER, w TEXT);
CREATE TABLE t3 (q INTEGER);
CREATE VIEW v1 AS SELECT COUNT(*) AS c FROM t1;
CREATE VIEW v2 AS SELECT MAX(y) AS m FROM t2;
CREATE VIEW v5 AS SELECT SUM(x) AS s FROM t1;
"""
    p = bootstrap.plan(db, new)
    bootstrap.apply(db, p)
    assert db.execute("SELECT * FROM v1").fetchall() == [(3,)]
    assert db.execute("SELECT * FROM v5").fetchall() == [(6,)]
    assert db.execute("SELECT COUNT(*) FROM t2").fetchone() == (0,)
    assert db.execute("SELECT * FROM v2").fetchall() == [(None,)]
    assert db.execute("SELECT COUNT(*) FROM t3").fetchone() == (0,)
    names = {r.name for r in bootstrap.schema(db)}
    assert names == {"t1", "t2", "t3", "v1", "v2", "v5"}
    # The rewritten database is what the program makes: a second plan finds nothing.
    assert not bootstrap.plan(db, new).needs_rewrite


def test_apply_rolls_back_when_the_new_schema_cannot_be_made(tmp_path: Path) -> None:
    db = _checkpoint(tmp_path)
    p = bootstrap.plan(db, OLD.replace("gone", "gone2"))  # a table (and its view) renamed
    broken = bootstrap.Plan(
        p.diff, p.old, (*p.new, bootstrap.Relation("view", "bad", "CREATE VIEW ("))
    )
    with pytest.raises(sqlite3.Error):
        bootstrap.apply(db, broken)
    # Nothing was dropped: the restored state is as it was.
    assert {r.name for r in bootstrap.schema(db)} == {r.name for r in p.old}
    assert db.execute("SELECT COUNT(*) FROM t1").fetchone() == (3,)
