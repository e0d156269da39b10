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
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from stopcock.contract.program import empty_program_error
from stopcock.contract.statuses import Program
from stopcock.manager.control.feed import FeedEvent
from stopcock.manager.control.health import ClusterHealth, HealthHistory
from stopcock.manager.control.links import RuntimeLinks
from stopcock.manager.control.ownership import Ownership, SoleOwnership
from stopcock.manager.control.records import PipelineRecords
from stopcock.manager.control.replica import Replica
from stopcock.manager.control.runner import LocalProcessRunner
from stopcock.manager.control.runtime_client import RuntimeClient
from stopcock.manager.control.supervisor import Supervisor
from stopcock.manager.domain import errors, state_machine
from stopcock.manager.domain.bootstrap_options import BootstrapOptions
from stopcock.manager.domain.definition import Definition, validate_name
from stopcock.manager.domain.model import (
    CLEARING,
    PENDING,
    PROVISIONED,
    SQL_ERROR,
    SUCCESS,
    PipelineRecord,
    annotate,
    evolve,
    new_record,
    now_us,
)
from stopcock.program import compile_program, rust_udf_error
from stopcock.runtime import bootstrap

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
    def __init__(
        self,
        records: PipelineRecords,
        runner: LocalProcessRunner,
        ownership: Ownership | None = None,
    ) -> None:
        """`ownership` None: the sole manager (SQLite); a `Replica`: one of several."""
        self.records = records
        self._runner = runner
        self._replica = ownership if isinstance(ownership, Replica) else None
        self._supervisor = Supervisor(records, runner, ownership or SoleOwnership(), self._compile)
        self._links = RuntimeLinks(runner)
        self._background: set[asyncio.Task[Any]] = set()
        self._compiling: set[tuple[str, int]] = set()
        self._health = HealthHistory()

    async def open(self) -> None:
        """Loads every pipeline and resumes the work that was under way.

        A replica takes its share of that work through its leases instead.
        """
        recs = await self.records.load()
        if self._runner.hangs is not None:
            # Before any actor re-adopts a runtime: it asks whether one is watched.
            await self._runner.hangs.connect()
        if self._replica is not None:
            await self._replica.start(self._supervisor)
            return
        for rec in recs:
            if rec.program_status in (PENDING, Program.SQL_COMPILED):
                self._compile(rec)
            if not rec.fully_stopped or rec.storage_status == CLEARING:
                self.poke(rec.id)

    async def close(self) -> None:
        """Stops the actors (a replica hands its pipelines over); runtimes keep running."""
        if self._replica is not None:
            await self._replica.close()
        else:
            await self._supervisor.close()
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._links.close()
        if self._runner.hangs is not None:
            self._runner.hangs.close()

    def poke(self, pipeline_id: str) -> None:
        self._supervisor.poke(pipeline_id)

    # -- reads ---------------------------------------------------------

    async def find(self, pipeline_id: str) -> PipelineRecord | None:
        return await self.records.find(pipeline_id)

    async def get(self, name: str) -> PipelineRecord:
        return await self.records.get(name)

    async def list(self) -> list[PipelineRecord]:
        return await self.records.list()

    def statuses(self) -> tuple[str, ...]:
        return self.records.statuses()

    async def cluster_health(self) -> ClusterHealth:
        """Checks the manager's three parts, as Feldera's cluster monitor does.

        api: this manager answers and its store serves a read. compiler: the
        in-process compiler compiles a one-table program (on the thread pool
        the real compilations use). runner: a runtime could be spawned.
        """
        try:
            count = len(await self.records.list())
            api = (True, f"the pipeline manager answers; {count} pipelines")
        except Exception as exc:  # any store failure is the answer
            api = (False, f"the store fails: {exc}")
        try:
            probe = await asyncio.to_thread(compile_program, "CREATE TABLE t (x INTEGER);")
            compiler = (
                (True, f"in-process SQL compiler; {len(self._compiling)} compilations under way")
                if probe.ok
                else (False, f"the compiler refuses a valid program: {probe.program_error}")
            )
        except Exception as exc:  # as above: any failure is the answer
            compiler = (False, f"the compiler fails: {exc}")
        problem = await asyncio.to_thread(self._runner.health_problem)
        runner = (
            (True, "local process runner; runtimes can be spawned")
            if problem is None
            else (False, f"runtimes cannot be spawned: {problem}")
        )
        return await self._health.record({"api": api, "compiler": compiler, "runner": runner})

    def watch(self, name: str, after_version: int) -> AsyncIterator[tuple[PipelineRecord, bool]]:
        return self.records.watch(name, after_version)

    def watch_all(self) -> AsyncIterator[FeedEvent]:
        return self.records.watch_all()

    def log_path(self, rec: PipelineRecord) -> Path:
        return self._runner.run_dir(rec.id) / "runtime.log"

    async def runtime_alive(self, pipeline_id: str) -> bool:
        """Whether the pipeline's runtime process may still write to its log."""
        rec = await self.records.find(pipeline_id)
        return rec is not None and rec.resources_status != "Stopped"

    async def runtime_for(self, name: str, request: str) -> tuple[PipelineRecord, RuntimeClient]:
        """The runtime of a deployed pipeline, for a request that needs it (or 503)."""
        rec = await self.get(name)
        if rec.resources_status != PROVISIONED or rec.resources_desired != PROVISIONED:
            raise errors.not_deployed(
                rec.name, rec.deployment_status, rec.deployment_desired_status
            )
        client = self._supervisor.client(rec.id)
        if client is None and self._replica is not None and self._replica.lease(rec.id) is None:
            # Another replica owns it: user data goes to the runtime directly
            # (same host: the address and secret are in the shared data dir).
            client = await self._links.client(rec)
        if client is None:
            raise errors.unreachable(rec.name, request, "the runtime is not reachable right now")
        return rec, client

    # -- commands ------------------------------------------------------

    async def _apply(
        self, name: str, rule: Callable[[PipelineRecord], dict[str, Any] | None]
    ) -> PipelineRecord:
        """Applies a state-machine rule to the named pipeline, persists, pokes."""

        def change(rec: PipelineRecord) -> PipelineRecord | None:
            changes = rule(rec)
            return None if changes is None else evolve(rec, **changes)

        result = await self.records.update(("name", name), change)
        assert result is not None  # by name: an unknown pipeline raised
        old, new = result
        if new is not old:
            self.poke(new.id)
        return new

    async def start(
        self,
        name: str,
        initial: str,
        dismiss_error: bool,
        options: BootstrapOptions | None = None,
    ) -> PipelineRecord:
        return await self._apply(
            name, lambda r: state_machine.on_start(r, initial, dismiss_error, options)
        )

    async def diff(self, name: str, program_code: str | None) -> dict[str, Any]:
        """Feldera's PipelineDiff of replacing the current program with `program_code`."""
        rec = await self.get(name)
        if rec.program_status != SUCCESS:
            raise errors.ApiError(
                404,
                "ProgramNotCompiled",
                f"Pipeline '{name}' has not been compiled yet. Please compile the pipeline first.",
                {"pipeline_name": name},
                "NOT_FOUND",
            )
        new_code = rec.program_code if program_code is None else program_code
        return await asyncio.to_thread(_program_diff, rec.program_code, new_code)

    async def approve(self, name: str) -> None:
        """Lets the deployment's bootstrap proceed (Feldera's /approve).

        The approval is persisted before the runtime is told and before the
        answer: if this manager dies in between, the actor of the restarted
        one finds the runtime still AwaitingApproval and delivers it.
        """
        rec, client = await self.runtime_for(name, "approve")

        def change(current: PipelineRecord) -> PipelineRecord | None:
            if current.deployment_id != rec.deployment_id:
                raise errors.not_deployed(
                    current.name, current.deployment_status, current.deployment_desired_status
                )
            return None if current.bootstrap_approved else evolve(current, bootstrap_approved=True)

        await self.records.update(("id", rec.id), change)
        await client.approve()

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
        await self.records.create(rec)
        self._compile(rec)
        return rec

    async def put(self, name: str, d: Definition) -> tuple[PipelineRecord, bool]:
        """Creates or replaces; returns the record and whether it was created."""
        validate_name(name)
        try:
            return await self._edit(name, lambda _: d), False
        except errors.ApiError as err:
            if err.error_code != "UnknownPipelineName":
                raise
            if d.name != name:
                raise errors.precondition(
                    "CannotRenameNonExistingPipeline",
                    f"Cannot rename pipeline '{name}' to '{d.name}': '{name}' does not exist",
                ) from None
            return await self.create(d), True

    async def patch(
        self, name: str, patched: Callable[[PipelineRecord], Definition]
    ) -> PipelineRecord:
        """Applies a partial update: `patched` builds the whole new definition from
        the current record (under its lock) and validates it."""
        return await self._edit(name, patched)

    async def _edit(
        self, name: str, definition_of: Callable[[PipelineRecord], Definition]
    ) -> PipelineRecord:
        def change(rec: PipelineRecord) -> PipelineRecord | None:
            d = definition_of(rec)
            changes: dict[str, Any] = {
                f: getattr(d, f) for f in DEFINITION_FIELDS if getattr(d, f) != getattr(rec, f)
            }
            state_machine.check_edit(rec, changes)
            if not changes:
                return None
            if not any(f in state_machine.CORE_FIELDS for f in changes):
                return annotate(rec, **changes)
            changes["version"] = rec.version + 1
            if any(f in state_machine.PROGRAM_FIELDS for f in changes):
                changes.update(
                    program_version=rec.program_version + 1,
                    program_status=PENDING,
                    program_info=None,
                )
            return evolve(rec, **changes)

        result = await self.records.update(("name", name), change, renames=True)
        assert result is not None
        old, new = result
        if new.program_version != old.program_version:
            self._compile(new)
        return new

    async def delete(self, name: str) -> None:
        rec = await self.records.remove(name, state_machine.check_delete)
        await asyncio.to_thread(self._runner.remove_pipeline, rec.id)
        self.poke(rec.id)  # a live actor notices the deletion and exits

    # -- background work ----------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _compile(self, rec: PipelineRecord) -> None:
        """Compiles the record's program unless that version is compiling here already."""
        key = (rec.id, rec.program_version)
        if key in self._compiling:
            return
        self._compiling.add(key)
        task = self._spawn(
            self._compile_task(rec.id, rec.program_version, rec.program_code, rec.udf_rust)
        )
        task.add_done_callback(lambda _: self._compiling.discard(key))

    async def _compile_task(
        self, pipeline_id: str, program_version: int, code: str, udf_rust: str = ""
    ) -> None:
        result = await asyncio.to_thread(compile_program, code)
        # Rust UDFs need Feldera's Rust build, which Stopcock has not: as a
        # failed Rust compilation, after the SQL compiled (the SDK shows stderr).
        rust_error = rust_udf_error(udf_rust)

        def sql_compiled(rec: PipelineRecord) -> PipelineRecord | None:
            if rec.program_version != program_version:
                return None  # edited meanwhile: that edit compiles anew
            # SqlCompiled: a manager stopped between the two steps (it goes on below).
            if rec.program_status not in (PENDING, Program.SQL_COMPILED):
                return None  # compiled elsewhere
            if rec.program_status == Program.SQL_COMPILED and result.ok:
                return None
            if not result.ok:
                return evolve(
                    rec,
                    program_status=SQL_ERROR,
                    program_info=None,
                    program_error=result.program_error,
                )
            # As Feldera: SqlCompiled (with program_info) then Success, each a
            # refresh_version of its own (db/operations/pipeline.rs).
            return evolve(
                rec,
                program_status=Program.SQL_COMPILED.value,
                program_info=result.program_info,
                program_error={**empty_program_error(), "sql_compilation": result.sql_compilation},
            )

        def success(rec: PipelineRecord) -> PipelineRecord | None:
            if rec.program_version != program_version or rec.program_status != Program.SQL_COMPILED:
                return None
            if rust_error is not None:
                error = {**result.program_error, "rust_compilation": rust_error}
                return evolve(rec, program_status=Program.RUST_ERROR.value, program_error=error)
            return evolve(rec, program_status=SUCCESS, program_error=result.program_error)

        written = await self.records.update(("id", pipeline_id), sql_compiled)
        if written is None:
            return
        # Unchanged: edited or compiled elsewhere, unless a manager stopped between the steps.
        if written[1] is written[0] and written[0].program_status != Program.SQL_COMPILED:
            return
        if result.ok:
            written = await self.records.update(("id", pipeline_id), success)
            if written is None or written[1] is written[0]:
                return
        new = written[1]
        log.info(
            "pipeline %s: program version %d compiled: %s",
            new.name,
            program_version,
            new.program_status,
        )
        self.poke(pipeline_id)


def _program_diff(current: str, proposed: str) -> dict[str, Any]:
    """The diff a start would bootstrap (runtime/bootstrap.py compares the same way)."""
    old = bootstrap.program_schema(current)
    try:
        new = bootstrap.program_schema(proposed)
    except sqlite3.Error as exc:
        raise errors.bad_request(
            "InvalidNewProgramSql",
            f"The proposed new SQL program has compilation errors: {exc}",
            {"error": str(exc)},
        ) from exc
    return bootstrap.compare(old, new).pipeline_diff()
