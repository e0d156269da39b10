"""The lifecycle's commands: the API's operations on pipelines.

Each validates with `state_machine`, persists through `records` (one
transaction, before the caller is answered), then pokes the pipeline's
actor through the `supervisor`; none waits for the work itself. Compiling a
program is background work started here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from stopcock.manager.control.records import Records
from stopcock.manager.control.runner import LocalProcessRunner
from stopcock.manager.control.runtime_client import RuntimeClient
from stopcock.manager.control.supervisor import Supervisor
from stopcock.manager.domain import errors, state_machine
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
from stopcock.manager.store import Store
from stopcock.program import compile_program

log = logging.getLogger("stopcock.lifecycle")

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
        self.records = Records(store)
        self._runner = runner
        self._supervisor = Supervisor(self.records, runner)
        self._background: set[asyncio.Task[Any]] = set()

    async def open(self) -> None:
        """Loads every pipeline and resumes the work that was under way."""
        for rec in await self.records.load():
            if rec.program_status == PENDING:
                self._compile(rec)
            if not rec.fully_stopped or rec.storage_status == CLEARING:
                self.poke(rec.id)

    async def close(self) -> None:
        """Stops the actors; runtime processes keep running (they are re-adopted)."""
        await self._supervisor.close()
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def poke(self, pipeline_id: str) -> None:
        self._supervisor.poke(pipeline_id)

    # -- reads ---------------------------------------------------------

    def by_id(self, pipeline_id: str) -> PipelineRecord | None:
        return self.records.by_id(pipeline_id)

    def get(self, name: str) -> PipelineRecord:
        return self.records.get(name)

    def list(self) -> list[PipelineRecord]:
        return self.records.list()

    def statuses(self) -> tuple[str, ...]:
        return self.records.statuses()

    def watch(self, name: str, after_version: int) -> AsyncIterator[tuple[PipelineRecord, bool]]:
        return self.records.watch(name, after_version)

    def log_path(self, name: str) -> Path:
        return self._runner.run_dir(self.get(name).id) / "runtime.log"

    def runtime_alive(self, pipeline_id: str) -> bool:
        """Whether the pipeline's runtime process may still write to its log."""
        rec = self.records.by_id(pipeline_id)
        return rec is not None and rec.resources_status != "Stopped"

    def runtime_for(self, name: str, request: str) -> tuple[PipelineRecord, RuntimeClient]:
        """The runtime of a deployed pipeline, for a request that needs it (or 503)."""
        rec = self.get(name)
        if rec.resources_status != PROVISIONED or rec.resources_desired != PROVISIONED:
            raise errors.not_deployed(
                rec.name, rec.deployment_status, rec.deployment_desired_status
            )
        client = self._supervisor.client(rec.id)
        if client is None:
            raise errors.unreachable(rec.name, request, "the runtime is not reachable right now")
        return rec, client

    # -- commands ------------------------------------------------------

    async def _apply(
        self, name: str, rule: Callable[[PipelineRecord], dict[str, Any] | None]
    ) -> PipelineRecord:
        """Looks up `name`, applies a state-machine rule, persists, pokes."""
        rec = self.get(name)
        async with self.records.lock(rec.id):
            rec = self.get(name)
            changes = rule(rec)
            if changes is None:
                return rec
            new = evolve(rec, **changes)
            await self.records.commit(rec, new)
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
        async with self.records.names_lock:
            if self.records.id_of(d.name) is not None:
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
            await self.records.commit(None, rec)
        self._compile(rec)
        return rec

    async def put(self, name: str, d: Definition) -> tuple[PipelineRecord, bool]:
        """Creates or replaces; returns the record and whether it was created."""
        validate_name(name)
        async with self.records.names_lock:
            pipeline_id = self.records.id_of(name)
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
        async with self.records.names_lock, self.records.lock(pipeline_id):
            rec = self.records.by_id(pipeline_id)
            assert rec is not None
            changed = [f for f in DEFINITION_FIELDS if getattr(d, f) != getattr(rec, f)]
            state_machine.check_edit(rec, changed)
            if not changed:
                return rec, False
            if "name" in changed and self.records.id_of(d.name) is not None:
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
            await self.records.commit(rec, new)
        if program_changed:
            self._compile(new)
        return new, False

    async def delete(self, name: str) -> None:
        async with self.records.names_lock:
            rec = self.get(name)
            async with self.records.lock(rec.id):
                rec = self.get(name)
                state_machine.check_delete(rec)
                await self.records.remove(rec)
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
        async with self.records.lock(pipeline_id):
            rec = self.records.by_id(pipeline_id)
            if rec is None or rec.program_version != program_version:
                return  # deleted or edited meanwhile: that edit compiles anew
            new = evolve(
                rec,
                program_status=SUCCESS if result.ok else SQL_ERROR,
                program_info=result.program_info,
                program_error=result.program_error,
            )
            await self.records.commit(rec, new)
        log.info(
            "pipeline %s: program version %d compiled: %s",
            new.name,
            program_version,
            new.program_status,
        )
        self.poke(pipeline_id)
