"""The runtime's in-memory database: snapshots for readers, cuts that include the WAL.

Unit tests of stopcock.runtime.memdb (no processes): the end-to-end paths
are in test_queries and test_checkpoints.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from stopcock.runtime.memdb import MemoryDatabase


def _insert(db: MemoryDatabase, start: int, count: int) -> None:
    db.db.execute("BEGIN")
    db.db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(start, start + count)])
    db.db.execute("COMMIT")


def _ids(conn: sqlite3.Connection) -> list[int]:
    return [row[0] for row in conn.execute("SELECT id FROM t ORDER BY id")]


def test_a_cut_taken_while_a_reader_holds_a_snapshot_restores_every_commit(
    tmp_path: Path,
) -> None:
    db = MemoryDatabase.open()
    db.db.execute("CREATE TABLE t (id INTEGER NOT NULL)")
    _insert(db, 0, 5000)
    reader = db.readers[0]
    held = reader.execute("SELECT id FROM t")  # a snapshot, held while unfinished
    assert held.fetchone() is not None
    _insert(db, 5000, 5000)  # frames the passive checkpoint cannot move yet
    path = tmp_path / "cut"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        size, wal_size = db.copy_to(fd)
    finally:
        os.close(fd)
    assert wal_size > 0  # the WAL went along
    assert path.stat().st_size == size
    # The reader still sees its snapshot only.
    assert len(held.fetchall()) == 4999
    held.close()
    db.close()

    restored = MemoryDatabase.open(restore_from=path, wal_size=wal_size)
    try:
        assert _ids(restored.db) == list(range(10_000))
        assert _ids(restored.readers[0]) == list(range(10_000))
    finally:
        restored.close()


def test_without_readers_the_cut_is_the_database_file_alone(tmp_path: Path) -> None:
    db = MemoryDatabase.open()
    db.db.execute("CREATE TABLE t (id INTEGER NOT NULL)")
    _insert(db, 0, 3000)
    path = tmp_path / "cut"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        _, wal_size = db.copy_to(fd)
    finally:
        os.close(fd)
    db.close()
    assert wal_size == 0
    restored = MemoryDatabase.open(restore_from=path)
    try:
        assert _ids(restored.db) == list(range(3000))
    finally:
        restored.close()


def _open_files() -> list[str]:
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the fd listdir itself used
            continue
    return links


def test_the_files_are_unlinked_once_open() -> None:
    """So that the memory is freed whenever the process ends, SIGKILL included."""
    db = MemoryDatabase.open()
    try:
        ours = [link for link in _open_files() if "/stopcock-" in link]
        assert len(ours) >= 3  # the database, its -wal and -shm (ours and SQLite's)
        assert all(link.endswith("(deleted)") for link in ours), ours
    finally:
        db.close()
