"""Leases on a real PostgreSQL (store/leases.py): claims split, expiry by the database's clock,
epochs that fence a stale owner's writes, release, history and notifications."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import psycopg
import pytest
from stopcock.manager.domain.model import PipelineRecord, evolve
from stopcock.manager.store import Change, Fence, Fenced
from stopcock.manager.store.postgres import PostgresStore

from tests.support import WAIT
from tests.test_store import sample

pytestmark = pytest.mark.e2e

LONG = 30.0  # seconds: a lease that outlives the test


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[PostgresStore]:
    opened = await PostgresStore(postgres_url).open()
    yield opened
    await opened.close()


async def expired(url: str, replica: str) -> None:
    """Returns once the database's clock has passed the replica's expiry (bounded poll)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for _ in range(int(WAIT / 0.02)):
            cur = await conn.execute(
                "SELECT expires_at <= clock_timestamp() FROM replicas WHERE id = %s", (replica,)
            )
            row = await cur.fetchone()
            if row is None or row[0]:
                return
            await asyncio.sleep(0.02)  # a bounded poll of the database's clock
    raise AssertionError(f"replica {replica} did not expire")


def described(text: str) -> Change:
    def change(rec: PipelineRecord) -> PipelineRecord:
        return evolve(rec, description=text)

    return change


async def test_replicas_claiming_together_split_the_work(store: PostgresStore) -> None:
    for i in range(20):
        await store.insert(sample(f"p{i}"))
    await store.register("a", LONG)
    await store.register("b", LONG)
    claimed: dict[str, list[tuple[str, int]]] = {"a": [], "b": []}
    while sum(len(v) for v in claimed.values()) < 20:
        got_a, got_b = await asyncio.gather(store.claim("a", 7), store.claim("b", 7))
        claimed["a"] += got_a
        claimed["b"] += got_b
    ids_a = {pid for pid, _ in claimed["a"]}
    ids_b = {pid for pid, _ in claimed["b"]}
    assert not ids_a & ids_b  # never both
    assert ids_a | ids_b == {f"id-p{i}" for i in range(20)}
    assert {epoch for _, epoch in claimed["a"] + claimed["b"]} == {1}
    # A live owner's leases are not claimable.
    await store.register("c", LONG)
    assert await store.claim("c", 64) == []


async def test_a_dead_owners_pipeline_is_claimed_and_its_writes_are_fenced(
    store: PostgresStore, postgres_url: str
) -> None:
    await store.insert(sample("p"))
    await store.register("old", 0.3)
    assert await store.claim("old", 10) == [("id-p", 1)]
    old = Fence("old", 1)
    assert await store.update(("id", "id-p"), described("by old"), old) is not None

    await expired(postgres_url, "old")
    assert await store.heartbeat("old", LONG) is False  # too late: it never comes back
    await store.register("new", LONG)
    assert await store.claim("new", 10) == [("id-p", 2)]

    before = await store.get("id-p")
    with pytest.raises(Fenced):
        await store.update(("id", "id-p"), described("stale"), old)
    assert await store.get("id-p") == before  # the stale write changed nothing
    result = await store.update(("id", "id-p"), described("by new"), Fence("new", 2))
    assert result is not None and result[1].description == "by new"
    # The old owner's fence is refused even though it names the right epoch's owner id.
    with pytest.raises(Fenced):
        await store.update(("id", "id-p"), described("stale"), Fence("old", 2))


async def test_release_hands_over_at_once_with_a_new_epoch(store: PostgresStore) -> None:
    await store.insert(sample("p"))
    await store.register("a", LONG)
    await store.register("b", LONG)
    assert await store.claim("a", 10) == [("id-p", 1)]
    assert await store.claim("b", 10) == []
    await store.release("a")
    assert await store.claim("b", 10) == [("id-p", 2)]
    assert await store.owned_with_work("b") == ["id-p"]


async def test_a_pipeline_without_work_is_not_claimed(store: PostgresStore) -> None:
    compiled = dataclasses.replace(sample("idle"), program_status="Success")
    await store.insert(compiled)
    await store.register("a", LONG)
    assert await store.claim("a", 10) == []
    await store.update(("id", compiled.id), lambda r: evolve(r, resources_desired="Provisioned"))
    assert await store.claim("a", 10) == [(compiled.id, 1)]


async def test_every_write_is_kept_in_order_and_notified(store: PostgresStore) -> None:
    notes = store.notifications()
    assert await anext(notes) == "listening"
    await store.insert(sample("p"))
    for text in ("one", "two", "three"):
        await store.update(("name", "p"), described(text))
    history = await store.history("id-p", 0)
    assert [r.refresh_version for r in history] == [1, 2, 3, 4]
    assert [r.description for r in history[1:]] == ["one", "two", "three"]
    heard = [await asyncio.wait_for(anext(notes), WAIT) for _ in range(4)]
    assert heard == [f"id-p {v}" for v in (1, 2, 3, 4)]
    await notes.aclose()
    removed = await store.remove("p", lambda rec: None)
    assert removed is not None and await store.history("id-p", 0) == []
