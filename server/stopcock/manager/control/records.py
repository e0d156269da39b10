"""Pipeline records: `PipelineRecords`, what the lifecycle and the actors read and write.

Two forms. `Records` (here) is the embedded one, over SQLite: the manager is
the database's only writer (a kernel lock sees to it), so a write-through
cache is exact and reads never touch the disk. `SharedRecords`
(shared_records.py) is the replicas' one, over PostgreSQL: the rows are the
truth, every read is a query and every write a read-modify-write under the
row's lock.

Either way a record is visible only after its transaction committed (persist
before visible, persist before acknowledge), every write is checked against
the resource transition table first, and recent versions of each pipeline
are kept (HISTORY of them) so that a watcher can resume from a
refresh_version without a gap.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

from stopcock.manager.control.feed import ChangeFeed, FeedEvent
from stopcock.manager.domain import errors, transitions
from stopcock.manager.domain.model import PipelineRecord, evolve
from stopcock.manager.observability import TRANSITIONS
from stopcock.manager.store import Change, DuplicateKey, Fence, Store

HISTORY = 256  # recent versions kept per pipeline for watchers that resume

# ("id", pipeline id) or ("name", pipeline name)
Key = tuple[str, str]


class PipelineRecords(Protocol):
    """The pipelines, as the lifecycle and the actors see them."""

    async def load(self) -> list[PipelineRecord]: ...
    async def get(self, name: str) -> PipelineRecord: ...
    async def find(self, pipeline_id: str) -> PipelineRecord | None: ...
    async def list(self) -> list[PipelineRecord]: ...
    def statuses(self) -> tuple[str, ...]: ...
    async def create(self, rec: PipelineRecord) -> None: ...
    async def update(
        self, key: Key, change: Change, *, renames: bool = False
    ) -> tuple[PipelineRecord, PipelineRecord] | None: ...
    async def write(
        self, pipeline_id: str, fence: Fence | None, **changes: Any
    ) -> PipelineRecord: ...
    async def remove(
        self, name: str, check: Callable[[PipelineRecord], None]
    ) -> PipelineRecord: ...
    def watch(
        self, name: str, after_version: int
    ) -> AsyncIterator[tuple[PipelineRecord, bool]]: ...
    def watch_all(self) -> AsyncIterator[FeedEvent]: ...
    async def versions(self, name: str) -> Sequence[PipelineRecord]: ...


def checked(change: Change) -> Change:
    """`change`, with its result checked against the transition table (a bug, not a request)."""

    def apply(old: PipelineRecord) -> PipelineRecord | None:
        new = change(old)
        if new is not None:
            transitions.check(old, new)
        return new

    return apply


def count_transition(old: PipelineRecord, new: PipelineRecord) -> None:
    if old.deployment_status != new.deployment_status:
        TRANSITIONS.labels(old.deployment_status, new.deployment_status).inc()


class Records:
    """The embedded form: an exact write-through cache over the only writer's store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._by_id: dict[str, PipelineRecord] = {}
        self._id_by_name: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.names_lock = asyncio.Lock()
        self._history: dict[str, deque[PipelineRecord]] = {}
        self._changed = asyncio.Condition()
        self._feed = ChangeFeed()

    async def load(self) -> list[PipelineRecord]:
        for rec in await self._store.load_all():
            self._by_id[rec.id] = rec
            self._id_by_name[rec.name] = rec.id
        return list(self._by_id.values())

    # -- reads ---------------------------------------------------------

    async def find(self, pipeline_id: str) -> PipelineRecord | None:
        return self._by_id.get(pipeline_id)

    async def get(self, name: str) -> PipelineRecord:
        return self._get(name)

    def _get(self, name: str) -> PipelineRecord:
        pipeline_id = self._id_by_name.get(name)
        if pipeline_id is None:
            raise errors.unknown_pipeline(name)
        return self._by_id[pipeline_id]

    async def list(self) -> list[PipelineRecord]:
        return sorted(self._by_id.values(), key=lambda r: r.name)

    def statuses(self) -> tuple[str, ...]:
        """Every pipeline's deployment status (safe from another thread: one C-level copy)."""
        return tuple(rec.deployment_status for rec in tuple(self._by_id.values()))

    # -- writes --------------------------------------------------------

    def _lock(self, pipeline_id: str) -> asyncio.Lock:
        return self._locks.setdefault(pipeline_id, asyncio.Lock())

    async def create(self, rec: PipelineRecord) -> None:
        async with self.names_lock:
            if rec.name in self._id_by_name:
                raise errors.duplicate_name(rec.name)
            await self._commit(None, rec)

    async def update(
        self, key: Key, change: Change, *, renames: bool = False
    ) -> tuple[PipelineRecord, PipelineRecord] | None:
        """Applies `change` to the current record under its lock: (old, new).

        By name, an unknown pipeline is refused (404); by id, a deleted one
        gives None. A change that may rename takes the names lock first.
        """
        if renames:
            async with self.names_lock:
                return await self._update(key, change, renames=True)
        return await self._update(key, change, renames=False)

    async def _update(
        self, key: Key, change: Change, *, renames: bool
    ) -> tuple[PipelineRecord, PipelineRecord] | None:
        by, value = key
        pipeline_id = self._get(value).id if by == "name" else value
        async with self._lock(pipeline_id):
            old = self._by_id.get(pipeline_id)
            if old is None or (by == "name" and old.name != value):  # deleted, renamed
                if by == "name":
                    raise errors.unknown_pipeline(value)
                return None
            new = checked(change)(old)
            if new is None:
                return old, old
            if new.name != old.name:
                assert renames, "a rename must hold the names lock"
                if new.name in self._id_by_name:
                    raise errors.duplicate_name(new.name)
            await self._commit(old, new)
            return old, new

    async def write(self, pipeline_id: str, fence: Fence | None, **changes: Any) -> PipelineRecord:
        """Persists `changes` to the current version of the record (used by actors).

        `fence` is ignored: this manager is the only one (control/ownership.py).
        """
        result = await self.update(("id", pipeline_id), lambda cur: evolve(cur, **changes))
        if result is None:
            raise LookupError(f"pipeline {pipeline_id} was deleted")
        return result[1]

    async def _commit(self, old: PipelineRecord | None, new: PipelineRecord) -> None:
        """Persists `new` (which replaces `old`), then makes it visible."""
        try:
            await self._store.put(new)
        except DuplicateKey as exc:
            raise errors.duplicate_name(new.name) from exc
        if old is not None and old.name != new.name:
            self._id_by_name.pop(old.name, None)
        self._by_id[new.id] = new
        self._id_by_name[new.name] = new.id
        if old is not None:
            count_transition(old, new)
        history = self._history.setdefault(new.id, deque(maxlen=HISTORY))
        if history and history[-1].refresh_version == new.refresh_version:
            history[-1] = new  # a metadata edit (model.annotate): the same version
        else:
            history.append(new)
        self._feed.touch(new.id)
        async with self._changed:
            self._changed.notify_all()

    async def remove(self, name: str, check: Callable[[PipelineRecord], None]) -> PipelineRecord:
        """Deletes the named pipeline if `check` (under its lock) does not raise."""
        async with self.names_lock:
            pipeline_id = self._get(name).id
            async with self._lock(pipeline_id):
                rec = self._get(name)
                check(rec)
                await self._store.delete(rec.id)
                del self._by_id[rec.id]
                del self._id_by_name[rec.name]
                self._history.pop(rec.id, None)
                self._feed.touch(rec.id)
                async with self._changed:
                    self._changed.notify_all()  # watchers of it end
            self._locks.pop(rec.id, None)
            return rec

    # -- watching ------------------------------------------------------

    async def versions(self, name: str) -> Sequence[PipelineRecord]:
        """The kept versions of the named pipeline, oldest first, ending with the current one.

        Kept in memory: a restarted manager starts again from the current version.
        """
        current = self._get(name)
        kept = list(self._history.get(current.id, ()))
        if not kept or kept[-1].refresh_version != current.refresh_version:
            kept.append(current)
        return kept

    def watch_all(self) -> AsyncIterator[FeedEvent]:
        """Every pipeline, then each change and deletion (control/feed.py)."""
        return self._feed.follow(self.list, self.find)

    async def watch(
        self, name: str, after_version: int
    ) -> AsyncIterator[tuple[PipelineRecord, bool]]:
        """Every persisted version of a pipeline after `after_version`, as it is written.

        Yields (record, resumed): `resumed` is False when versions were
        skipped (the request predates the history window, or this watcher
        fell that far behind). Ends when the pipeline is deleted.
        """
        pipeline_id = self._get(name).id
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
