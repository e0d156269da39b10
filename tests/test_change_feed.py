"""The feed behind WatchPipelines (control/feed.py): coalesced, nothing missed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import replace as evolve

from stopcock.manager.control.feed import ChangeFeed, FeedEvent
from stopcock.manager.domain.model import PipelineRecord

from tests.test_store import sample as record


class Table:
    def __init__(self, *recs: PipelineRecord) -> None:
        self.rows = {r.id: r for r in recs}

    async def list(self) -> list[PipelineRecord]:
        return sorted(self.rows.values(), key=lambda r: r.name)

    async def find(self, pipeline_id: str) -> PipelineRecord | None:
        return self.rows.get(pipeline_id)


def summary(event: FeedEvent) -> object:
    if event.record is not None:
        return (event.record.name, event.record.refresh_version)
    return event.deleted if event.deleted is not None else "synced"


async def take(events: AsyncGenerator[FeedEvent, None], n: int) -> list[object]:
    return [summary(await asyncio.wait_for(anext(events), 5)) for _ in range(n)]


async def test_snapshot_then_synced_then_coalesced_changes_and_deletions() -> None:
    a, b = record("a"), record("b")
    table, feed = Table(a, b), ChangeFeed()
    events = feed.follow(table.list, table.find)
    assert await take(events, 3) == [("a", 1), ("b", 1), "synced"]
    for version in (2, 3, 4):  # three commits before the watcher looks: one event
        table.rows[a.id] = evolve(a, refresh_version=version)
        feed.touch(a.id)
    del table.rows[b.id]
    feed.touch(b.id)
    assert await take(events, 2) == [("a", 4), (b.id, "b")]
    feed.touch(b.id)  # a deleted pipeline it already reported: nothing more
    table.rows[a.id] = evolve(a, name="a2", refresh_version=5)
    feed.touch(a.id)
    assert await take(events, 1) == [("a2", 5)]
    await events.aclose()


async def test_a_resync_reports_what_changed_and_what_disappeared_unnoticed() -> None:
    a, b = record("a"), record("b")
    table, feed = Table(a, b), ChangeFeed()
    events = feed.follow(table.list, table.find)
    assert await take(events, 3) == [("a", 1), ("b", 1), "synced"]
    del table.rows[a.id]  # no touch: a lost notification
    c = record("c")
    table.rows[c.id] = c
    feed.touch_all()
    assert await take(events, 3) == [("b", 1), ("c", 1), (a.id, "a")]
    await events.aclose()


async def test_a_watcher_that_left_is_no_longer_touched() -> None:
    a = record("a")
    table, feed = Table(a), ChangeFeed()
    events = feed.follow(table.list, table.find)
    await take(events, 2)
    await events.aclose()
    feed.touch(a.id)
    assert not feed._subscribers
