"""The SQLite store: round trips, schema versioning, durability settings."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from stopcock.manager.domain.model import evolve, new_record
from stopcock.manager.store import ApiKeyRecord, DuplicateKey, SchemaTooNew
from stopcock.manager.store.sqlite import SCHEMA_VERSION, AsyncStore, SqliteStore


def sample(name: str = "p") -> object:
    return new_record(
        pipeline_id=f"id-{name}",
        name=name,
        description="d",
        runtime_config={"storage": {}, "n": 1.5},
        program_code="CREATE TABLE t (x INT);",
        udf_rust="",
        udf_toml="",
        program_config={"profile": "optimized"},
        tags=("a", "b"),
        at=123,
    )


def test_round_trip_and_rename(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite")
    rec = sample()
    store.put(rec)  # type: ignore[arg-type]
    changed = evolve(rec, name="q", deployment_error={"message": "m"})  # type: ignore[arg-type]
    store.put(changed)
    store.close()
    reopened = SqliteStore(tmp_path / "db.sqlite")
    assert reopened.load_all() == [changed]
    reopened.delete(changed.id)
    assert reopened.load_all() == []


def test_schema_is_versioned_and_durable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite")
    assert store.schema_version() == SCHEMA_VERSION >= 1
    db = sqlite3.connect(tmp_path / "db.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    store.close()
    with pytest.raises(SchemaTooNew):
        SqliteStore(tmp_path / "db.sqlite")


async def test_async_store(tmp_path: Path) -> None:
    store = await AsyncStore(tmp_path / "db.sqlite").open()
    await store.put(sample("a"))  # type: ignore[arg-type]
    await store.put(sample("b"))  # type: ignore[arg-type]
    assert [r.name for r in await store.load_all()] == ["a", "b"]
    await store.close()


def test_api_key_lookup_by_hash_sees_other_processes_writes(tmp_path: Path) -> None:
    manager = SqliteStore(tmp_path / "db.sqlite")  # held open, as the manager holds it
    assert manager.find_api_key("0" * 64) is None
    # Another connection (the offline CLI) adds a key while the first stays open.
    cli = SqliteStore(tmp_path / "db.sqlite")
    key = ApiKeyRecord("id-1", "ops", "write", "ab" * 32, 1)
    cli.put_api_key(key)
    cli.close()
    assert manager.find_api_key("ab" * 32) == key
    assert manager.find_api_key("ab" * 31 + "ac") is None
    # One indexed lookup, not a scan of every key.
    db = sqlite3.connect(tmp_path / "db.sqlite")
    plan = db.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM api_keys WHERE key_hash = ?", ("x",)
    ).fetchall()
    db.close()
    assert any("USING INDEX" in row[3] for row in plan), plan
    with pytest.raises(DuplicateKey):  # names are unique
        manager.put_api_key(ApiKeyRecord("id-2", "ops", "read", "cd" * 32, 2))
    manager.close()
