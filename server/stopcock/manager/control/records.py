"""Pipeline records: the store behind a write-through cache, and their history.

The manager is the database's only writer, so the cache is exact, and a
record enters it only after its transaction committed (persist before
visible, persist before acknowledge). Writes to one pipeline are serialized
by its lock; create, rename and delete also take the names lock. Every
write is checked against the resource transition table first.

Recent versions of each pipeline are kept (HISTORY of them) so that a
watcher can resume from a refresh_version without a gap.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from stopcock.manager.domain import errors, transitions
from stopcock.manager.domain.model import PipelineRecord, evolve
from stopcock.manager.observability import TRANSITIONS
from stopcock.manager.store import Store

HISTORY = 256  # recent versions kept per pipeline for watchers that resume


class Records:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._by_id: dict[str, PipelineRecord] = {}
        self._id_by_name: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.names_lock = asyncio.Lock()
        self._history: dict[str, deque[PipelineRecord]] = {}
        self._changed = asyncio.Condition()

    async def load(self) -> list[PipelineRecord]:
        for rec in await self._store.load_all():
            self._by_id[rec.id] = rec
            self._id_by_name[rec.name] = rec.id
        return list(self._by_id.values())

    # -- reads ---------------------------------------------------------

    def by_id(self, pipeline_id: str) -> PipelineRecord | None:
        return self._by_id.get(pipeline_id)

    def id_of(self, name: str) -> str | None:
        return self._id_by_name.get(name)

    def get(self, name: str) -> PipelineRecord:
        pipeline_id = self._id_by_name.get(name)
        if pipeline_id is None:
            raise errors.unknown_pipeline(name)
        return self._by_id[pipeline_id]

    def list(self) -> list[PipelineRecord]:
        return sorted(self._by_id.values(), key=lambda r: r.name)

    def statuses(self) -> tuple[str, ...]:
        """Every pipeline's deployment status (safe from another thread: one C-level copy)."""
        return tuple(rec.deployment_status for rec in tuple(self._by_id.values()))

    # -- writes --------------------------------------------------------

    def lock(self, pipeline_id: str) -> asyncio.Lock:
        return self._locks.setdefault(pipeline_id, asyncio.Lock())

    async def commit(self, old: PipelineRecord | None, new: PipelineRecord) -> None:
        """Persists `new` (which replaces `old`), then makes it visible."""
        if old is not None:
            transitions.check(old, new)  # a bug, not a request: fail before persisting
        await self._store.put(new)
        if old is not None and old.name != new.name:
            self._id_by_name.pop(old.name, None)
        self._by_id[new.id] = new
        self._id_by_name[new.name] = new.id
        if old is not None and old.deployment_status != new.deployment_status:
            TRANSITIONS.labels(old.deployment_status, new.deployment_status).inc()
        self._history.setdefault(new.id, deque(maxlen=HISTORY)).append(new)
        async with self._changed:
            self._changed.notify_all()

    async def write(self, rec: PipelineRecord, **changes: Any) -> PipelineRecord:
        """Persists `changes` to the current version of `rec` (used by actors)."""
        async with self.lock(rec.id):
            current = self._by_id.get(rec.id)
            if current is None:
                raise LookupError(f"pipeline {rec.id} was deleted")
            new = evolve(current, **changes)
            await self.commit(current, new)
            return new

    async def remove(self, rec: PipelineRecord) -> None:
        """Deletes the record (the caller holds its lock and the names lock)."""
        await self._store.delete(rec.id)
        del self._by_id[rec.id]
        del self._id_by_name[rec.name]
        self._history.pop(rec.id, None)
        async with self._changed:
            self._changed.notify_all()  # watchers of it end
        self._locks.pop(rec.id, None)

    # -- watching ------------------------------------------------------

    async def watch(
        self, name: str, after_version: int
    ) -> AsyncIterator[tuple[PipelineRecord, bool]]:
        """Every persisted version of a pipeline after `after_version`, as it is written.

        Yields (record, resumed): `resumed` is False when versions were
        skipped (the request predates the history window, or this watcher
        fell that far behind). Ends when the pipeline is deleted.
        """
        pipeline_id = self.get(name).id
        last = after_version
        while True:
            current = self._by_id.get(pipeline_id)
            if current is None:
                return
            if current.refresh_version > last:
                history = self._history.get(pipeline_id) or deque([current])
                newer = [r for r in history if r.refresh_version > last]
                contiguous = last > 0 and bool(newer) and newer[0].refresh_version == last + 1
                if not contiguous:
                    newer = [current]  # start (or restart) from the current state
                for i, rec in enumerate(newer):
                    yield rec, contiguous or i > 0
                last = newer[-1].refresh_version
                continue

            def changed(seen: int = last) -> bool:
                rec = self._by_id.get(pipeline_id)
                return rec is None or rec.refresh_version > seen

            async with self._changed:
                await self._changed.wait_for(changed)
