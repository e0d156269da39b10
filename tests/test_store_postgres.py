"""The PostgreSQL store only: migrations under the advisory lock, errors, encoding.

On a real server (tests/postgres.py), a fresh database per test: e2e.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row
from stopcock.manager.domain.model import evolve
from stopcock.manager.store import ApiKeyRecord, DuplicateKey, SchemaTooNew, StoreError
from stopcock.manager.store.postgres import MIGRATION_LOCK, SCHEMA_VERSION, PostgresStore
from stopcock.manager.store.sqlite import SqliteStore

from tests.postgres import EmbeddedPostgres
from tests.support import WAIT
from tests.test_store import sample

pytestmark = pytest.mark.e2e


def migrations(url: str) -> list[tuple[int, int]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            "SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY version"
        )
        return [(int(v), int(n)) for v, n in cur.fetchall()]


async def test_replicas_opening_together_migrate_once(postgres_url: str) -> None:
    stores = await asyncio.gather(*(PostgresStore(postgres_url).open() for _ in range(4)))
    assert migrations(postgres_url) == [(v, 1) for v in range(1, SCHEMA_VERSION + 1)]
    for store in stores:
        assert await store.schema_version() == SCHEMA_VERSION
    await stores[0].put(sample())
    assert await stores[1].load_all() == [sample()]
    for store in stores:
        await store.close()
    again = await PostgresStore(postgres_url).open()  # up to date: nothing to apply
    assert migrations(postgres_url) == [(v, 1) for v in range(1, SCHEMA_VERSION + 1)]
    await again.close()


async def test_migrations_wait_for_the_advisory_lock(postgres_url: str) -> None:
    holder = await psycopg.AsyncConnection.connect(postgres_url)
    await holder.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))  # held: in txn
    opening = asyncio.create_task(PostgresStore(postgres_url).open())

    async def waiting_on_the_lock() -> bool:
        cur = await holder.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )
        row = await cur.fetchone()
        return row is not None and row[0] == 1

    async with asyncio.timeout(WAIT):
        while True:  # a bounded poll of pg_locks: there is no event to wait on
            if await waiting_on_the_lock():
                break
            await asyncio.sleep(0.005)
    assert not opening.done()
    await holder.rollback()  # releases the lock: the opening store migrates
    store = await opening
    assert await store.schema_version() == SCHEMA_VERSION
    await store.close()
    await holder.close()


async def test_a_newer_schema_is_refused(postgres_url: str) -> None:
    store = await PostgresStore(postgres_url).open()
    await store.put(sample())
    await store.close()
    with psycopg.connect(postgres_url) as conn:
        conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaTooNew, match=f"schema version {SCHEMA_VERSION + 1}"):
        await PostgresStore(postgres_url).open()


async def test_duplicate_names_and_hashes(postgres_url: str) -> None:
    store = await PostgresStore(postgres_url).open()
    await store.put_api_key(ApiKeyRecord("id-1", "ops", "write", "ab" * 32, 1))
    with pytest.raises(DuplicateKey, match="'ops'"):
        await store.put_api_key(ApiKeyRecord("id-2", "ops", "read", "cd" * 32, 2))
    with pytest.raises(DuplicateKey):  # the same hash under another name
        await store.put_api_key(ApiKeyRecord("id-3", "ci", "read", "ab" * 32, 3))
    # A pipeline name held by another id is refused, not silently replaced.
    await store.put(sample("a"))
    with pytest.raises(StoreError, match="PostgreSQL store failed") as refused:
        await store.put(evolve(sample("b"), name="a"))
    assert not isinstance(refused.value, DuplicateKey)
    assert isinstance(refused.value.__cause__, psycopg.errors.UniqueViolation)
    assert [r.id for r in await store.load_all()] == ["id-a"]
    await store.close()


async def test_api_key_hash_is_indexed(postgres_url: str) -> None:
    await (await PostgresStore(postgres_url).open()).close()
    with psycopg.connect(postgres_url) as conn:
        defs = [
            row[0]
            for row in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'api_keys'"
            ).fetchall()
        ]
    assert any("UNIQUE" in d and "(key_hash)" in d for d in defs), defs
    assert any("UNIQUE" in d and "(name)" in d for d in defs), defs


async def test_no_psycopg_error_crosses(postgres: EmbeddedPostgres, postgres_url: str) -> None:
    unreachable = "postgresql://postgres@/nowhere?host=/nonexistent-dir"
    with pytest.raises(StoreError, match="the PostgreSQL store failed: connection") as refused:
        await PostgresStore(unreachable).open()
    assert isinstance(refused.value.__cause__, psycopg.OperationalError)
    missing = postgres.url("no_such_database")
    with pytest.raises(StoreError, match='database "no_such_database" does not exist'):
        await PostgresStore(missing).open()

    store = await PostgresStore(postgres_url).open()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.load_all()
    with pytest.raises(StoreError, match="closed"):
        await store.put(sample())
    await store.close()  # closing twice is harmless
    never_opened = PostgresStore(postgres_url)
    with pytest.raises(StoreError, match="not open"):
        await never_opened.load_all()


async def test_rows_are_encoded_as_in_sqlite(postgres_url: str, tmp_path: Path) -> None:
    rec = evolve(sample(), deployment_error={"message": "m", "é": [1, None]}, runtime_pid=7)
    lite = SqliteStore(tmp_path / "db.sqlite")
    lite.put(rec)
    lite.close()
    db = sqlite3.connect(tmp_path / "db.sqlite")
    db.row_factory = sqlite3.Row
    expected = dict(db.execute("SELECT * FROM pipelines").fetchone())
    db.close()

    store = await PostgresStore(postgres_url).open()
    await store.put(rec)
    await store.close()
    with psycopg.connect(postgres_url, row_factory=dict_row) as conn:
        got = conn.execute("SELECT * FROM pipelines").fetchone()
    assert got == expected  # same columns, same order, same JSON text
    assert got is not None and list(got) == list(expected)
