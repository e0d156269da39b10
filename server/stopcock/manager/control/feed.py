"""Every pipeline's changes, for the watchers of them all (WatchPipelines).

A watcher of one pipeline follows its versions (records.watch); a watcher of
all pipelines only needs the latest state of each that changed, so each
subscriber keeps a set of changed pipeline ids, coalesced: a slow watcher
costs memory bounded by the number of pipelines, never a queue of versions.
The records (embedded or shared) touch the feed on every commit and
deletion; a shared store that may have lost notifications asks every
subscriber to look at everything again (`touch_all`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass

from stopcock.manager.domain.model import PipelineRecord


@dataclass(frozen=True)
class FeedEvent:
    """One WatchPipelines event: a pipeline's state, a deletion, or `synced`."""

    record: PipelineRecord | None = None
    deleted: tuple[str, str] | None = None  # (id, last name)
    synced: bool = False


class _Subscriber:
    def __init__(self) -> None:
        self.changed: dict[str, None] = {}  # ids in order of first change
        self.everything = False
        self.wake = asyncio.Event()

    async def next(self) -> list[str] | None:
        """The ids changed since the last call (None: look at everything)."""
        await self.wake.wait()
        self.wake.clear()
        if self.everything:
            self.everything = False
            self.changed.clear()
            return None
        ids = list(self.changed)
        self.changed.clear()
        return ids


class ChangeFeed:
    def __init__(self) -> None:
        self._subscribers: set[_Subscriber] = set()

    def touch(self, pipeline_id: str) -> None:
        for sub in self._subscribers:
            sub.changed[pipeline_id] = None
            sub.wake.set()

    def touch_all(self) -> None:
        for sub in self._subscribers:
            sub.everything = True
            sub.wake.set()

    @contextlib.contextmanager
    def _subscribe(self) -> Iterator[_Subscriber]:
        sub = _Subscriber()
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    async def follow(
        self,
        list_all: Callable[[], Awaitable[list[PipelineRecord]]],
        find: Callable[[str], Awaitable[PipelineRecord | None]],
    ) -> AsyncGenerator[FeedEvent, None]:
        """Every pipeline now, `synced`, then each change and deletion as it is committed.

        Subscribed before the first listing, so nothing committed meanwhile
        is missed (at worst a pipeline is sent twice).
        """
        with self._subscribe() as sub:
            known: dict[str, str] = {}  # id -> name, to name a deletion
            for event in _everything(await list_all(), known):
                yield event
            yield FeedEvent(synced=True)
            while True:
                ids = await sub.next()
                if ids is None:
                    for event in _everything(await list_all(), known):
                        yield event
                    continue
                for pipeline_id in ids:
                    rec = await find(pipeline_id)
                    if rec is not None:
                        known[pipeline_id] = rec.name
                        yield FeedEvent(record=rec)
                    elif (name := known.pop(pipeline_id, None)) is not None:
                        yield FeedEvent(deleted=(pipeline_id, name))


def _everything(records: list[PipelineRecord], known: dict[str, str]) -> Iterator[FeedEvent]:
    """Each of `records`, then a deletion for each known pipeline not among them."""
    present = {rec.id for rec in records}
    for rec in records:
        known[rec.id] = rec.name
        yield FeedEvent(record=rec)
    for pipeline_id in [i for i in known if i not in present]:
        yield FeedEvent(deleted=(pipeline_id, known.pop(pipeline_id)))
