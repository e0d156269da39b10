"""Applying checked rows (stopcock.runtime.data), without processes."""

from __future__ import annotations

import sqlite3

import pytest
from stopcock.runtime import data


def test_a_full_database_refuses_the_rows_507_and_keeps_what_it_had() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE t (id INTEGER NOT NULL, name TEXT)")
    shape = data.table_shape(db, "t")
    data.apply(db, shape, [[(1, "kept")]], [])
    # As when the tmpfs holding a pipeline's database fills up.
    db.execute("PRAGMA max_page_count = 10")
    rows = [(i, "x" * 1000) for i in range(1000)]
    with pytest.raises(data.DataError) as info:
        data.apply(db, shape, [rows], [])
    assert (info.value.http_status, info.value.code) == (507, "InsufficientStorage")
    assert "nothing was ingested" in info.value.message
    assert db.execute("SELECT id, name FROM t").fetchall() == [(1, "kept")]


def test_rows_with_every_column_and_rows_with_some_give_the_same_tuples() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE t (id INTEGER NOT NULL, name TEXT, note TEXT)")
    shape = data.table_shape(db, "t")
    full = [{"id": 1, "name": "a", "note": "n"}, {"note": "m", "id": 2, "name": "b"}]
    partial = [{"id": 3}, {"name": "c", "id": 4}]
    assert data.to_rows(shape, "raw", full) == ([(1, "a", "n"), (2, "b", "m")], [])
    assert data.to_rows(shape, "raw", partial) == ([(3, None, None), (4, "c", None)], [])
    with pytest.raises(data.DataError, match="unknown column 'nope'"):
        data.to_rows(shape, "raw", [{"id": 1, "name": "a", "nope": 2}])
