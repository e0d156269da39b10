"""The stores: round trips, API keys, schema versioning, durability settings.

The shared tests run through the async `Store` protocol on both stores:
SQLite (`AsyncStore`) and PostgreSQL (`PostgresStore`, on a fresh database of
a real server: marked e2e, as it starts one). The SQLite-specific ones follow;
tests/test_store_postgres.py has the PostgreSQL-specific ones.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from stopcock.manager.config import ConfigError, Settings
from stopcock.manager.domain.model import PipelineRecord, evolve, new_record
from stopcock.manager.store import ApiKeyRecord, DuplicateKey, SchemaTooNew, Store
from stopcock.manager.store.sqlite import SCHEMA_VERSION, AsyncStore, SqliteStore

Opener = Callable[[], Awaitable[Store]]


def sample(name: str = "p") -> PipelineRecord:
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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.e2e)])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens a new store on the test's database (the same database at every call)."""
    if request.param == "sqlite":
        return lambda: AsyncStore(tmp_path / "db.sqlite").open()
    from stopcock.manager.store.postgres import PostgresStore

    url: str = request.getfixturevalue("postgres_url")
    return lambda: PostgresStore(url).open()


# -- every store ------------------------------------------------------------------


async def test_round_trip_and_rename(open_store: Opener) -> None:
    store = await open_store()
    rec = sample()
    await store.put(rec)
    changed = evolve(rec, name="q", deployment_error={"message": "m"}, runtime_pid=2**40)
    await store.put(changed)  # an upsert: the same id
    await store.close()
    reopened = await open_store()
    assert await reopened.load_all() == [changed]
    await reopened.delete(changed.id)
    assert await reopened.load_all() == []
    await reopened.delete(changed.id)  # deleting what is gone is no error
    await reopened.close()


async def test_records_load_in_name_order(open_store: Opener) -> None:
    store = await open_store()
    for name in ("b", "a", "c"):
        await store.put(sample(name))
    assert [r.name for r in await store.load_all()] == ["a", "b", "c"]
    await store.close()


async def test_api_key_lookup_by_hash_sees_other_stores_writes(open_store: Opener) -> None:
    manager = await open_store()  # held open, as the manager holds it
    assert await manager.find_api_key("0" * 64) is None
    # Another store (the offline CLI, another manager) adds a key while the first stays open.
    cli = await open_store()
    key = ApiKeyRecord("id-1", "ops", "write", "ab" * 32, 1)
    await cli.put_api_key(key)
    await cli.close()
    assert await manager.find_api_key("ab" * 32) == key
    assert await manager.find_api_key("ab" * 31 + "ac") is None
    with pytest.raises(DuplicateKey):  # names are unique
        await manager.put_api_key(ApiKeyRecord("id-2", "ops", "read", "cd" * 32, 2))
    other = ApiKeyRecord("id-3", "ci", "read", "ef" * 32, 3)
    await manager.put_api_key(other)
    assert await manager.load_api_keys() == [other, key]  # by name
    assert await manager.delete_api_key("ops") is True
    assert await manager.delete_api_key("ops") is False
    assert await manager.find_api_key("ab" * 32) is None
    await manager.close()


async def test_concurrent_writes_all_land(open_store: Opener) -> None:
    store = await open_store()
    await asyncio.gather(*(store.put(sample(f"p{i}")) for i in range(20)))
    assert len(await store.load_all()) == 20
    await store.close()


# -- SQLite only ------------------------------------------------------------------


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


async def test_concurrent_writes_share_commits_and_fail_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: writes that wait for a commit go together; a failing one fails alone."""
    batches: list[int] = []
    apply = SqliteStore.apply

    def counted(self: SqliteStore, ops: list[Callable[[SqliteStore], None]]) -> object:
        batches.append(len(ops))
        return apply(self, ops)

    monkeypatch.setattr(SqliteStore, "apply", counted)
    store = await AsyncStore(tmp_path / "db.sqlite").open()
    await store.put(sample("taken"))
    clash = evolve(sample("other"), name="taken")  # another id with a taken name: UNIQUE
    results = await asyncio.gather(
        *(store.put(sample(f"p{i}")) for i in range(30)),
        store.put(clash),
        store.delete("id-p0"),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and "UNIQUE" in str(failed[0]), failed
    names = [r.name for r in await store.load_all()]
    assert "other" not in names and "p0" not in names and len(names) == 30  # taken + p1..p29
    assert len(batches) < 30, batches  # 32 writes did not take 32 commits
    await store.close()
    reopened = SqliteStore(tmp_path / "db.sqlite")  # committed: durable, seen by a new reader
    assert len(reopened.load_all()) == 30
    reopened.close()


def test_api_key_lookup_by_hash_uses_the_index(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "db.sqlite").close()
    db = sqlite3.connect(tmp_path / "db.sqlite")
    plan = db.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM api_keys WHERE key_hash = ?", ("x",)
    ).fetchall()
    db.close()
    assert any("USING INDEX" in row[3] for row in plan), plan


# -- choosing the store -----------------------------------------------------------


def test_database_url_selects_postgres_and_defaults_to_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STOPCOCK_DATABASE_URL", raising=False)
    assert Settings.from_env().database_url is None  # SQLite, as before
    monkeypatch.setenv("STOPCOCK_DATABASE_URL", "")
    assert Settings.from_env().database_url is None
    url = "postgresql://u:secret@db.example:5432/stopcock"
    monkeypatch.setenv("STOPCOCK_DATABASE_URL", url)
    assert Settings.from_env().database_url == url
    monkeypatch.setenv("STOPCOCK_DATABASE_URL", "mysql://u:secret@db/x")
    with pytest.raises(ConfigError) as refused:
        Settings.from_env()
    assert "postgresql://" in str(refused.value)
    assert "secret" not in str(refused.value)  # a password is never echoed


async def test_bootstrap_fields_round_trip(open_store: Opener) -> None:
    """The deployment's bootstrap options and resources details, booleans as booleans."""
    store = await open_store()
    rec = evolve(
        sample("boot"),
        bootstrap_policy="await_approval",
        silent_bootstrap=True,
        concurrent_bootstrap=False,
        bootstrap_approved=True,
        resources_status_details={"process": "has not exited", "working_dir": "exists"},
    )
    await store.put(rec)
    await store.close()
    reopened = await open_store()
    [loaded] = await reopened.load_all()
    assert loaded == rec
    assert loaded.silent_bootstrap is True and loaded.concurrent_bootstrap is False
    await reopened.close()


def test_a_version_2_database_migrates_with_the_bootstrap_defaults(tmp_path: Path) -> None:
    """A database written before bootstrapping existed: its pipelines read as never started so."""
    from stopcock.manager.store.rows import FIELDS, to_row
    from stopcock.manager.store.sqlite import MIGRATIONS

    path = tmp_path / "db.sqlite"
    db = sqlite3.connect(path)
    for step in MIGRATIONS[:2]:
        db.execute(step)
    old_fields = [f for f in FIELDS if f not in NEW_FIELDS]
    row = dict(zip(FIELDS, to_row(sample("old")), strict=True))
    db.execute(
        f"INSERT INTO pipelines ({', '.join(old_fields)}) "
        f"VALUES ({', '.join('?' for _ in old_fields)})",
        [row[f] for f in old_fields],
    )
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    store = SqliteStore(path)
    assert store.schema_version() == SCHEMA_VERSION
    [loaded] = store.load_all()
    assert loaded == sample("old")
    assert (loaded.bootstrap_policy, loaded.silent_bootstrap, loaded.bootstrap_approved) == (
        None,
        False,
        False,
    )
    store.close()


NEW_FIELDS = {
    "bootstrap_policy",
    "silent_bootstrap",
    "concurrent_bootstrap",
    "bootstrap_approved",
    "resources_status_details",
}
