"""SharedRecords: the pipelines of manager replicas sharing one PostgreSQL database.

Any replica may write any pipeline, so no replica's memory is the truth: a
read is a query (a GET on one replica right after a change made through
another sees it), and a write is the store's read-modify-write under the
row's lock (store/postgres.py `update`), which also keeps the version in
`pipeline_history` and notifies every replica on commit.

Watchers follow a pipeline through that history: they wake on the
notifications the replica's coordinator passes to `changed` (control/replica.py)
and, since notifications are lost while the listening connection is down,
also look again every RESYNC_SECS.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from stopcock.manager.control.feed import ChangeFeed, FeedEvent
from stopcock.manager.control.records import Key, checked, count_transition
from stopcock.manager.domain import errors
from stopcock.manager.domain.model import PipelineRecord, evolve
from stopcock.manager.store import Change, DuplicateKey, Fence, SharedStore

RESYNC_SECS = 1.0  # a watcher looks again at least this often
DELETED = -1  # the version `changed` records for a deleted pipeline


class SharedRecords:
    def __init__(self, store: SharedStore) -> None:
        self._store = store
        self._statuses: dict[str, str] = {}
        self._latest: dict[str, int] = {}  # newest version notified, per pipeline
        self._changed = asyncio.Condition()
        self._feed = ChangeFeed()

    # -- reads ---------------------------------------------------------

    async def load(self) -> list[PipelineRecord]:
        return await self.list()

    async def list(self) -> list[PipelineRecord]:
        recs = await self._store.load_all()
        self._statuses = {rec.id: rec.deployment_status for rec in recs}
        return recs

    async def get(self, name: str) -> PipelineRecord:
        rec = await self._store.get_by_name(name)
        if rec is None:
            raise errors.unknown_pipeline(name)
        return rec

    async def find(self, pipeline_id: str) -> PipelineRecord | None:
        return await self._store.get(pipeline_id)

    def statuses(self) -> tuple[str, ...]:
        """Every pipeline's deployment status, as of the last refresh (for the metrics)."""
        return tuple(self._statuses.values())

    async def refresh_statuses(self) -> None:
        self._statuses = dict(await self._store.statuses())

    # -- writes --------------------------------------------------------

    async def create(self, rec: PipelineRecord) -> None:
        try:
            await self._store.insert(rec)
        except DuplicateKey as exc:
            raise errors.duplicate_name(rec.name) from exc
        await self._written(rec)

    async def update(
        self, key: Key, change: Change, *, renames: bool = False, fence: Fence | None = None
    ) -> tuple[PipelineRecord, PipelineRecord] | None:
        """(old, new) as `Records.update`; the database serializes writers (`renames`
        needs no lock here: the name's unique index refuses a taken one)."""
        wanted: list[str] = []

        def apply(old: PipelineRecord) -> PipelineRecord | None:
            new = checked(change)(old)
            wanted[:] = [new.name] if new is not None else []
            return new

        try:
            result = await self._store.update(key, apply, fence)
        except DuplicateKey as exc:
            raise errors.duplicate_name(wanted[0] if wanted else key[1]) from exc
        if result is None:
            if key[0] == "name":
                raise errors.unknown_pipeline(key[1])
            return None
        old, new = result
        if new is not old:
            count_transition(old, new)
            await self._written(new)
        return result

    async def write(self, pipeline_id: str, fence: Fence | None, **changes: Any) -> PipelineRecord:
        """An actor's write, fenced by its lease (store.Fenced when the lease is lost)."""
        result = await self.update(
            ("id", pipeline_id), lambda cur: evolve(cur, **changes), fence=fence
        )
        if result is None:
            raise LookupError(f"pipeline {pipeline_id} was deleted")
        return result[1]

    async def remove(self, name: str, check: Callable[[PipelineRecord], None]) -> PipelineRecord:
        rec = await self._store.remove(name, check)
        if rec is None:
            raise errors.unknown_pipeline(name)
        self._statuses.pop(rec.id, None)
        await self.changed(rec.id, DELETED)
        return rec

    async def _written(self, rec: PipelineRecord) -> None:
        self._statuses[rec.id] = rec.deployment_status
        await self.changed(rec.id, rec.refresh_version)  # before the notification comes back

    # -- watching ------------------------------------------------------

    async def changed(self, pipeline_id: str, version: int) -> None:
        """A pipeline was written (`version`) or deleted (DELETED): wakes its watchers."""
        if version == DELETED:
            self._latest[pipeline_id] = DELETED
        elif self._latest.get(pipeline_id, 0) != DELETED:
            self._latest[pipeline_id] = max(version, self._latest.get(pipeline_id, 0))
        self._feed.touch(pipeline_id)
        async with self._changed:
            self._changed.notify_all()

    async def resync(self) -> None:
        """Wakes every watcher to look at the database (notifications may have been lost)."""
        self._feed.touch_all()
        async with self._changed:
            self._changed.notify_all()

    def watch_all(self) -> AsyncIterator[FeedEvent]:
        """As `Records.watch_all`, each change read from the database."""
        return self._feed.follow(self.list, self.find)

    async def versions(self, name: str) -> Sequence[PipelineRecord]:
        """As `Records.versions`, from the shared history (pipeline_history)."""
        current = await self.get(name)
        kept = await self._store.history(current.id, 0)
        kept = [r for r in kept if r.refresh_version <= current.refresh_version]
        if not kept or kept[-1].refresh_version != current.refresh_version:
            kept.append(current)
        return kept

    async def watch(
        self, name: str, after_version: int
    ) -> AsyncIterator[tuple[PipelineRecord, bool]]:
        """As `Records.watch`: every version after `after_version`, from the shared history."""
        current = await self.get(name)
        pipeline_id = current.id
        last = after_version
        while True:
            if last <= 0 or current.refresh_version > last:
                newer = [] if last <= 0 else await self._store.history(pipeline_id, last)
                contiguous = bool(newer) and newer[0].refresh_version == last + 1
                if not contiguous:
                    newer = [current]  # start (or restart) from the current state
                for i, rec in enumerate(newer):
                    yield rec, contiguous or i > 0
                last = max(last, newer[-1].refresh_version)

            def moved(seen: int = last) -> bool:
                latest = self._latest.get(pipeline_id, 0)
                return latest == DELETED or latest > seen

            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait_for(moved), RESYNC_SECS)
            found = await self._store.get(pipeline_id)
            if found is None:
                return
            current = found
