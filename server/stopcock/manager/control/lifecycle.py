"""The lifecycle core: the API's operations on pipelines, and their actors.

Records live in the store and, for reads, in a write-through cache here: the
manager is the database's only writer, so the cache is exact, and a record
enters it only after its transaction committed (persist before visible,
persist before acknowledge). Writes to one pipeline are serialized by its
lock; create, rename and delete also take the names lock.

API operations validate with `state_machine`, persist, then poke the
pipeline's actor; they never wait for the work itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from stopcock.manager.control.actor import PipelineActor
from stopcock.manager.control.runner import LocalProcessRunner
from stopcock.manager.control.runtime_client import RuntimeClient
from stopcock.manager.domain import errors, state_machine, transitions
from stopcock.manager.domain.definition import Definition, validate_name
from stopcock.manager.domain.model import (
    CLEARING,
    PENDING,
    PROVISIONED,
    SQL_ERROR,
    SUCCESS,
    PipelineRecord,
    evolve,
    new_record,
    now_us,
)
from stopcock.manager.observability import TRANSITIONS
from stopcock.manager.store import Store
from stopcock.program import compile_program

log = logging.getLogger("stopcock.lifecycle")

HISTORY = 256  # recent versions kept per pipeline for watchers that resume

DEFINITION_FIELDS = (
    "name",
    "description",
    "runtime_config",
    "program_code",
    "udf_rust",
    "udf_toml",
    "program_config",
    "tags",
)


class Lifecycle:
    def __init__(self, store: Store, runner: LocalProcessRunner) -> None:
        self._store = store
        self._runner = runner
        self._by_id: dict[str, PipelineRecord] = {}
        self._id_by_name: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._names_lock = asyncio.Lock()
        self._actors: dict[str, tuple[PipelineActor, asyncio.Task[None]]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False
        # Recent versions of each pipeline, for WatchPipeline (see `watch`).
        self._history: dict[str, deque[PipelineRecord]] = {}
        self._changed = asyncio.Condition()

    async def open(self) -> None:
        """Loads every pipeline and resumes the work that was under way."""
        for rec in await self._store.load_all():
            self._by_id[rec.id] = rec
            self._id_by_name[rec.name] = rec.id
        for rec in self._by_id.values():
            if rec.program_status == PENDING:
                self._compile(rec)
            if not rec.fully_stopped or rec.storage_status == CLEARING:
                self.poke(rec.id)

    async def close(self) -> None:
        """Stops the actors; runtime processes keep running (they are re-adopted)."""
        self._closing = True
        tasks = [task for _, task in self._actors.values()] + list(self._background)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- reads ---------------------------------------------------------

    def by_id(self, pipeline_id: str) -> PipelineRecord | None:
        return self._by_id.get(pipeline_id)

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

    def log_path(self, name: str) -> Path:
        return self._runner.run_dir(self.get(name).id) / "runtime.log"

    def runtime_alive(self, pipeline_id: str) -> bool:
        """Whether the pipeline's runtime process may still write to its log."""
        rec = self._by_id.get(pipeline_id)
        return rec is not None and rec.resources_status != "Stopped"

    def runtime_for(self, name: str, request: str) -> tuple[PipelineRecord, RuntimeClient]:
        """The runtime of a deployed pipeline, for a request that needs it (or 503)."""
        rec = self.get(name)
        if rec.resources_status != PROVISIONED or rec.resources_desired != PROVISIONED:
            raise errors.not_deployed(
                rec.name, rec.deployment_status, rec.deployment_desired_status
            )
        entry = self._actors.get(rec.id)
        client = entry[0].client() if entry is not None else None
        if client is None:
            raise errors.unreachable(rec.name, request, "the runtime is not reachable right now")
        return rec, client

    # -- writes --------------------------------------------------------

    def _lock(self, pipeline_id: str) -> asyncio.Lock:
        return self._locks.setdefault(pipeline_id, asyncio.Lock())

    async def _commit(self, old: PipelineRecord | None, new: PipelineRecord) -> None:
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

    async def write(self, rec: PipelineRecord, **changes: Any) -> PipelineRecord:
        """Persists `changes` to the current version of `rec` (used by actors)."""
        async with self._lock(rec.id):
            current = self._by_id.get(rec.id)
            if current is None:
                raise LookupError(f"pipeline {rec.id} was deleted")
            new = evolve(current, **changes)
            await self._commit(current, new)
            return new

    async def _apply(
        self, name: str, rule: Callable[[PipelineRecord], dict[str, Any] | None]
    ) -> PipelineRecord:
        """Looks up `name`, applies a state-machine rule, persists, pokes."""
        rec = self.get(name)
        async with self._lock(rec.id):
            rec = self.get(name)
            changes = rule(rec)
            if changes is None:
                return rec
            new = evolve(rec, **changes)
            await self._commit(rec, new)
        self.poke(new.id)
        return new

    async def start(self, name: str, initial: str, dismiss_error: bool) -> PipelineRecord:
        return await self._apply(name, lambda r: state_machine.on_start(r, initial, dismiss_error))

    async def stop(self, name: str, force: bool) -> PipelineRecord:
        return await self._apply(name, lambda r: state_machine.on_stop(r, force))

    async def pause(self, name: str) -> PipelineRecord:
        return await self._apply(name, state_machine.on_pause)

    async def resume(self, name: str) -> PipelineRecord:
        return await self._apply(name, state_machine.on_resume)

    async def dismiss_error(self, name: str) -> PipelineRecord:
        return await self._apply(name, state_machine.on_dismiss_error)

    async def clear_storage(self, name: str) -> PipelineRecord:
        return await self._apply(name, state_machine.on_clear)

    async def create(self, d: Definition) -> PipelineRecord:
        async with self._names_lock:
            if d.name in self._id_by_name:
                raise errors.duplicate_name(d.name)
            rec = new_record(
                pipeline_id=str(uuid.uuid4()),
                name=d.name,
                description=d.description,
                runtime_config=d.runtime_config,
                program_code=d.program_code,
                udf_rust=d.udf_rust,
                udf_toml=d.udf_toml,
                program_config=d.program_config,
                tags=d.tags,
                at=now_us(),
            )
            await self._commit(None, rec)
        self._compile(rec)
        return rec

    async def put(self, name: str, d: Definition) -> tuple[PipelineRecord, bool]:
        """Creates or replaces; returns the record and whether it was created."""
        validate_name(name)
        async with self._names_lock:
            pipeline_id = self._id_by_name.get(name)
            if pipeline_id is None:
                if d.name != name:
                    raise errors.precondition(
                        "CannotRenameNonExistingPipeline",
                        f"Cannot rename pipeline '{name}' to '{d.name}': '{name}' does not exist",
                    )
                created = True
            else:
                created = False
        if created or pipeline_id is None:
            return await self.create(d), True
        async with self._names_lock, self._lock(pipeline_id):
            rec = self._by_id[pipeline_id]
            changed = [f for f in DEFINITION_FIELDS if getattr(d, f) != getattr(rec, f)]
            state_machine.check_edit(rec, changed)
            if not changed:
                return rec, False
            if "name" in changed and d.name in self._id_by_name:
                raise errors.duplicate_name(d.name)
            changes: dict[str, Any] = {f: getattr(d, f) for f in changed}
            program_changed = any(f in state_machine.PROGRAM_FIELDS for f in changed)
            if program_changed or "runtime_config" in changed:
                changes["version"] = rec.version + 1
            if program_changed:
                changes.update(
                    program_version=rec.program_version + 1,
                    program_status=PENDING,
                    program_info=None,
                )
            new = evolve(rec, **changes)
            await self._commit(rec, new)
        if program_changed:
            self._compile(new)
        return new, False

    async def delete(self, name: str) -> None:
        async with self._names_lock:
            rec = self.get(name)
            async with self._lock(rec.id):
                rec = self.get(name)
                state_machine.check_delete(rec)
                await self._store.delete(rec.id)
                del self._by_id[rec.id]
                del self._id_by_name[rec.name]
                self._history.pop(rec.id, None)
        async with self._changed:
            self._changed.notify_all()  # watchers of it end
        self._locks.pop(rec.id, None)
        await asyncio.to_thread(self._runner.remove_pipeline, rec.id)
        self.poke(rec.id)  # a live actor notices the deletion and exits

    # -- background work ----------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _compile(self, rec: PipelineRecord) -> None:
        self._spawn(self._compile_task(rec.id, rec.program_version, rec.program_code))

    async def _compile_task(self, pipeline_id: str, program_version: int, code: str) -> None:
        result = await asyncio.to_thread(compile_program, code)
        async with self._lock(pipeline_id):
            rec = self._by_id.get(pipeline_id)
            if rec is None or rec.program_version != program_version:
                return  # deleted or edited meanwhile: that edit compiles anew
            new = evolve(
                rec,
                program_status=SUCCESS if result.ok else SQL_ERROR,
                program_info=result.program_info,
                program_error=result.program_error,
            )
            await self._commit(rec, new)
        log.info(
            "pipeline %s: program version %d compiled: %s",
            new.name,
            program_version,
            new.program_status,
        )
        self.poke(pipeline_id)

    def poke(self, pipeline_id: str) -> None:
        """Wakes the pipeline's actor, starting one if it is not running."""
        if self._closing:
            return
        entry = self._actors.get(pipeline_id)
        if entry is not None and not entry[1].done():
            entry[0].poke()
            return
        actor = PipelineActor(pipeline_id, self, self._runner)
        task = asyncio.create_task(actor.run(), name=f"actor-{pipeline_id}")
        self._actors[pipeline_id] = (actor, task)
        task.add_done_callback(lambda t: self._actor_done(pipeline_id, actor, t))

    def _actor_done(self, pipeline_id: str, actor: PipelineActor, task: asyncio.Task[None]) -> None:
        entry = self._actors.get(pipeline_id)
        if entry is not None and entry[0] is actor:
            del self._actors[pipeline_id]
        if task.cancelled() or self._closing:
            return
        if task.exception() is not None:
            # The supervisor: an actor that crashed is restarted (its state is
            # all in the record, so nothing is lost).
            log.error(
                "actor of pipeline %s crashed; restarting", pipeline_id, exc_info=task.exception()
            )
            asyncio.get_running_loop().call_later(0.5, self.poke, pipeline_id)
