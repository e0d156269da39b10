"""One actor per pipeline: reconciles the desired state with what runs.

Length (~430 lines): the whole reconcile loop of one pipeline, read top to
bottom as the resource automaton runs (provisioning, provisioned, stopping);
its rules are elsewhere (domain.transitions, domain.state_machine).

The actor is an asyncio task with a one-bit mailbox (`poke`): a message only
means "look again", so any number of pokes coalesce into one pass. Each pass
re-reads the pipeline's record, compares it with what it observes (the
runtime process, the status the runtime pushes), makes at most one
transition, persists it, and pokes itself if there is more to do: the design
is level-triggered, so a lost poke or a crash costs a pass, never a state.

Events that poke the actor: an API call that changed the record, the runtime
pushing a status, the runtime process exiting (pidfd), the ready pipe, a
finished compilation, and timers (provisioning deadline, retry backoff).

Every transition is persisted before anybody can see it, and the record is
the only state that survives the manager: on its first pass after a manager
restart (or after its replica claimed the pipeline from a dead one) the actor
re-adopts the runtime process recorded in it (pid + start time) or notices
that it is gone.

The actor acts only under its lease (control/ownership.py): it checks it
before each pass and right before spawning or killing, writes with its fence
and commands the runtime with its epoch. A lost lease (store.Fenced) ends
the actor at once, leaving the runtime to the new owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from stopcock import runtime_wire
from stopcock.contract import defaults
from stopcock.contract.runtime_spec import RuntimeSpec
from stopcock.contract.statuses import Program
from stopcock.manager.control.hangs import HangWatch
from stopcock.manager.control.ownership import Lease
from stopcock.manager.control.records import PipelineRecords
from stopcock.manager.control.runner import LocalProcessRunner, RuntimeProcess
from stopcock.manager.control.runtime_client import Pings, Report, RuntimeClient, is_fenced
from stopcock.manager.domain import errors, model, transitions
from stopcock.manager.domain.bootstrap_options import DEFAULT_POLICY
from stopcock.manager.domain.model import (
    AWAITING_APPROVAL,
    CLEARED,
    CLEARING,
    FAILED,
    PENDING,
    PROGRAM_ERRORS,
    PROVISIONED,
    PROVISIONING,
    STOPPED,
    STOPPING,
    SUCCESS,
    SUSPENDED,
    UNAVAILABLE,
    PipelineRecord,
    error_body,
)
from stopcock.manager.observability import (
    CHECKPOINT_DURATION,
    CHECKPOINT_SIZE,
    READOPTIONS,
    RUNTIME_EXITS,
    RUNTIMES_WATCHED,
    SUSPEND_DURATION,
    SUSPEND_SIZE,
    pipeline_var,
    request_var,
)
from stopcock.manager.store import Fenced

T = TypeVar("T")
log = logging.getLogger("stopcock.actor")

MAX_BACKOFF = 5.0


class PipelineActor:
    def __init__(
        self,
        pipeline_id: str,
        records: PipelineRecords,
        runner: LocalProcessRunner,
        lease: Lease,
        compile_program: Callable[[PipelineRecord], None],
    ) -> None:
        self.pipeline_id = pipeline_id
        self._records = records
        self._runner = runner
        self._lease = lease
        self._compile = compile_program
        self._wake = asyncio.Event()
        self._wake.set()
        self._next_wake: float | None = None
        self._recovered = False
        self.proc: RuntimeProcess | None = None
        self._client: RuntimeClient | None = None
        # Its template says the runtime is stopped (control/hangs.py).
        self.hung = False
        self._watch_task: asyncio.Task[None] | None = None
        self.report: Report | None = None
        self.connected = False
        self._pushed_desired: str | None = None
        # The persisted approval (rec.bootstrap_approved) reached this runtime.
        self._approval_delivered = False
        self._seen_checkpoints: set[str] | None = None  # for metrics: new ones only
        self._suspend: tuple[float, int] | None = None  # (started, size) of a finishing suspend

    def poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Passes until the pipeline is idle (fully stopped, nothing running)."""
        loop = asyncio.get_running_loop()
        backoff = 0.05
        rec = await self._records.find(self.pipeline_id)
        # For log lines. The task's context was copied from whatever woke the
        # actor first; that request's id would mislabel every later pass.
        pipeline_var.set(rec.name if rec is not None else self.pipeline_id)
        request_var.set(None)
        try:
            while True:
                if not self._wake.is_set():
                    timeout = None if self._next_wake is None else self._next_wake - loop.time()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
                self._wake.clear()
                self._next_wake = None
                try:
                    idle = await self._reconcile()
                    backoff = 0.05
                except (asyncio.CancelledError, Fenced):
                    raise
                except Exception:
                    log.exception("pipeline %s: reconcile failed; retrying", self.pipeline_id)
                    # Retry with exponential backoff and jitter, like a
                    # controller's work queue.
                    self._next_wake = loop.time() + backoff * random.uniform(0.5, 1.5)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                if idle and not self._wake.is_set():
                    return
        finally:
            await self._drop_process(kill=False)

    # -- helpers -------------------------------------------------------

    async def _persist(self, rec: PipelineRecord, **changes: Any) -> PipelineRecord:
        new = await self._records.write(rec.id, self._lease.fence, **changes)
        self.poke()  # more may follow: look again
        return new

    async def _enter_stopping(
        self, rec: PipelineRecord, error: dict[str, Any] | None
    ) -> PipelineRecord:
        changes = transitions.changes(rec, STOPPING)
        if error is not None:
            log.warning("pipeline %s stops with an error: %s", rec.name, error["message"])
            changes["deployment_error"] = error
            if error.get("error_code") in ("RuntimeExitedUnexpectedly", "RuntimeFailed"):
                RUNTIME_EXITS.labels(error["error_code"]).inc()
        return await self._persist(rec, **changes)

    async def _drop_process(self, kill: bool) -> None:
        if self.proc is not None:
            if kill and self._lease.valid():
                self._runner.kill(self.proc)
            else:
                self._runner.forget(self.proc)
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        self.proc = None
        self.report = None
        self.connected = False
        self.hung = False
        self._pushed_desired = None
        self._approval_delivered = False

    # -- the reconciliation pass ---------------------------------------

    async def _reconcile(self) -> bool:
        self._lease.check()
        rec = await self._records.find(self.pipeline_id)
        if rec is None:
            await self._drop_process(kill=True)
            return True
        if not self._recovered:
            self._recover(rec)
            self._recovered = True
        if rec.program_status in (PENDING, Program.SQL_COMPILED):
            self._compile(rec)  # its compiler may have died with another replica
        if rec.resources_desired == STOPPED or rec.resources_status == STOPPING:
            return await self._towards_stopped(rec)
        if rec.resources_status == STOPPED:
            await self._begin_provisioning(rec)
        elif rec.resources_status == PROVISIONING:
            await self._provisioning(rec)
        elif rec.resources_status == PROVISIONED:
            await self._provisioned(rec)
        return False

    def _recover(self, rec: PipelineRecord) -> None:
        """First pass: find the runtime an earlier manager left running."""
        if rec.resources_status == STOPPED or rec.deployment_id is None:
            return
        port = None
        if rec.resources_status == PROVISIONED and rec.deployment_location:
            port = int(rec.deployment_location.rsplit(":", 1)[1])
        if rec.runtime_pid is not None and rec.runtime_pid_start is not None:
            self.proc = self._runner.adopt(
                rec.id, rec.runtime_pid, rec.runtime_pid_start, port, self.poke
            )
        else:
            found = self._runner.find_runtime(rec.id, rec.deployment_id)
            if found is not None:
                pid, start, found_port = found
                self.proc = self._runner.adopt(rec.id, pid, start, found_port, self.poke)
        if self.proc is None:
            log.warning("pipeline %s: its runtime is gone", rec.name)
        else:
            READOPTIONS.inc()
        scan = self._runner.process_scan(not_before=self._lease.granted_at)
        strays = self._runner.kill_strays(rec.id, self.proc.pid if self.proc else None, scan)
        if strays:
            log.warning("pipeline %s: stopped runtimes nobody recorded: %s", rec.name, strays)

    async def _towards_stopped(self, rec: PipelineRecord) -> bool:
        if rec.resources_status in (PROVISIONING, PROVISIONED):
            await self._enter_stopping(rec, None)
            return False
        if rec.resources_status == STOPPING:
            if self.proc is not None and not self.proc.exited.is_set():
                self._lease.check()
                self._runner.kill(self.proc)
                return False  # the pidfd pokes us when it is gone
            await self._drop_process(kill=False)
            if self._suspend is not None:
                started, size = self._suspend
                SUSPEND_DURATION.observe(max(0.0, model.now_us() / 1e6 - started))
                SUSPEND_SIZE.observe(size)
                self._suspend = None
            await self._persist(rec, **transitions.changes(rec, STOPPED))
            return False
        if rec.storage_status == CLEARING:
            self._lease.check()
            await asyncio.to_thread(self._runner.clear_storage, rec.id)
            await self._persist(rec, storage_status=CLEARED, storage_status_details=None)
            return False
        return True

    async def _begin_provisioning(self, rec: PipelineRecord) -> None:
        if rec.program_status != SUCCESS:
            if rec.program_status in PROGRAM_ERRORS:
                await self._persist(
                    rec,
                    resources_desired=STOPPED,
                    runtime_desired=None,
                    deployment_error=error_body(
                        "CannotStartWithCompilationError",
                        f"The program failed to compile ({rec.program_status})",
                        None,
                    ),
                )
            return  # still compiling: the compiler pokes us when done
        await self._persist(
            rec, **transitions.changes(rec, PROVISIONING, deployment_id=str(uuid.uuid4()))
        )

    async def _provisioning(self, rec: PipelineRecord) -> None:
        loop = asyncio.get_running_loop()
        timeout = int(
            rec.runtime_config.get("provisioning_timeout_secs", defaults.PROVISIONING_TIMEOUT_SECS)
        )
        # The deadline counts from the persisted `_since`, so it survives a
        # manager restart.
        remaining = rec.resources_status_since / 1e6 + timeout - model.now_us() / 1e6
        if remaining <= 0:
            await self._enter_stopping(
                rec,
                error_body(
                    "ProvisioningTimeout",
                    f"The pipeline was not provisioned within {timeout} seconds "
                    "(runtime_config.provisioning_timeout_secs)",
                    {"provisioning_timeout_secs": timeout},
                ),
            )
            return
        self._next_wake = loop.time() + remaining
        if self.proc is not None and self.proc.port is None:
            # Re-adopted while provisioning, with no way to learn its port:
            # start over (provisioning is idempotent).
            self._lease.check()
            self._runner.kill(self.proc)
            if not self.proc.exited.is_set():
                return
            await self._drop_process(kill=False)
        if self.proc is None:
            assert rec.deployment_id is not None
            self._lease.check()
            self.proc = await self._runner.spawn(rec.id, self._spec(rec), self.poke)
            try:
                await self._persist(
                    rec, runtime_pid=self.proc.pid, runtime_pid_start=self.proc.start_time
                )
            except Fenced:
                # Spawned by a stale owner and recorded nowhere: nobody else
                # would ever stop it.
                self._runner.kill(self.proc)
                raise
            return
        port_future = self.proc.port
        assert port_future is not None
        if port_future.done() and port_future.exception() is None:
            port = port_future.result()
            await self._persist(
                rec,
                **transitions.changes(rec, PROVISIONED, deployment_location=f"127.0.0.1:{port}"),
            )
            return
        if self.proc.exited.is_set():
            await self._enter_stopping(
                rec,
                error_body(
                    "RuntimeExitedUnexpectedly",
                    f"The runtime process {self.proc.describe_exit()} while provisioning",
                    {"pid": self.proc.pid},
                ),
            )

    def _spec(self, rec: PipelineRecord) -> RuntimeSpec:
        assert rec.deployment_id is not None and rec.runtime_desired is not None
        return RuntimeSpec(
            pipeline_id=rec.id,
            pipeline_name=rec.name,
            deployment_id=rec.deployment_id,
            program_code=rec.program_code,
            runtime_config=dict(rec.runtime_config),
            initial=rec.runtime_desired,
            storage_dir=str(self._runner.storage_dir(rec.id)),
            epoch=self._lease.epoch,
            bootstrap_policy=bootstrap_policy(rec),
        )

    async def _provisioned(self, rec: PipelineRecord) -> None:
        proc = self.proc
        if proc is None or proc.exited.is_set():
            what = "is gone" if proc is None else proc.describe_exit()
            await self._enter_stopping(
                rec,
                error_body(
                    "RuntimeExitedUnexpectedly",
                    f"The runtime process {what}",
                    {"pid": rec.runtime_pid},
                ),
            )
            return
        if self._watch_task is None:
            assert proc.port is not None
            self._watch_task = asyncio.create_task(self._watch(proc, proc.port.result()))
        report = self.report
        if report is None or not self.connected:
            # Unreachable if it answered before, or if its template says it
            # is stopped (even a runtime re-adopted stopped never answered us).
            if report is not None or self.hung:
                details = _unreachable_details(rec)
                if (rec.runtime_status, rec.runtime_status_details) != (UNAVAILABLE, details):
                    await self._persist(
                        rec, runtime_status=UNAVAILABLE, runtime_status_details=details
                    )
            return
        status = runtime_wire.state_name(report.state)
        if status == FAILED:
            error = runtime_wire.plain(report.error) if report.HasField("error") else None
            await self._enter_stopping(
                rec,
                error
                or error_body("RuntimeFailed", "The runtime failed", {"pid": rec.runtime_pid}),
            )
            return
        observed = _observed(report, rec.storage_enabled)
        self._observe_checkpoints(observed.get("storage_status_details"))
        changed = {k: v for k, v in observed.items() if getattr(rec, k) != v}
        if changed:
            rec = await self._persist(rec, **changed)
        if status == SUSPENDED and rec.runtime_desired == SUSPENDED:
            checkpoints = (rec.storage_status_details or {}).get("checkpoints") or [{}]
            started = (rec.runtime_desired_since or model.now_us()) / 1e6
            self._suspend = (started, int(checkpoints[-1].get("size", 0)))
            await self._enter_stopping(rec, None)  # the suspend is complete
            return
        if status == AWAITING_APPROVAL and rec.bootstrap_approved:
            await self._deliver_approval(rec)
        wanted = rec.runtime_desired
        reported_desired = runtime_wire.state_name(report.desired_state)
        if wanted and wanted not in (reported_desired, self._pushed_desired):
            await self._push_desired(rec, wanted)

    async def _deliver_approval(self, rec: PipelineRecord) -> None:
        """An approval persisted but not delivered (the manager that took it died)."""
        if self._approval_delivered or self._client is None:
            return
        try:
            await self._client.approve()
            self._approval_delivered = True
            log.info("pipeline %s: delivered a persisted bootstrap approval", rec.name)
        except errors.ApiError as exc:
            log.info("pipeline %s: approval not delivered (%s); will retry", rec.name, exc)
            self._next_wake = asyncio.get_running_loop().time() + 0.2

    def _observe_checkpoints(self, details: dict[str, Any] | None) -> None:
        """Feeds the checkpoint metrics with checkpoints not seen before."""
        checkpoints = (details or {}).get("checkpoints") or []
        if self._seen_checkpoints is None:  # first report: history, not news
            self._seen_checkpoints = {c.get("uuid", "") for c in checkpoints}
            return
        for checkpoint in checkpoints:
            if checkpoint.get("uuid", "") not in self._seen_checkpoints:
                self._seen_checkpoints.add(checkpoint.get("uuid", ""))
                CHECKPOINT_SIZE.observe(float(checkpoint.get("size", 0)))
                CHECKPOINT_DURATION.observe(float(checkpoint.get("duration_ms", 0)) / 1000)

    def client(self) -> RuntimeClient | None:
        """The runtime's client while its status stream is up, else None."""
        return self._client if self.connected else None

    async def _push_desired(self, rec: PipelineRecord, wanted: str) -> None:
        assert self._client is not None
        try:
            await self._client.set_desired(wanted)
            self._pushed_desired = wanted
        except grpc.aio.AioRpcError as exc:
            if is_fenced(exc):
                raise Fenced(
                    f"pipeline {rec.id}: the runtime refused epoch {self._lease.epoch}"
                ) from exc
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                # The runtime refuses for good: a suspend that cannot happen
                # ends in a forced stop with the reason recorded.
                code = "SuspendFailed" if wanted == SUSPENDED else "RuntimeRefused"
                await self._enter_stopping(
                    rec,
                    error_body(
                        code,
                        f"The runtime refused to go {wanted}: {exc.details()}",
                        {"desired_status": wanted},
                    ),
                )
                return
            log.info("pipeline %s: runtime unreachable (%s); will retry", rec.name, exc.code())
            self._next_wake = asyncio.get_running_loop().time() + 0.2

    async def _watch(self, proc: RuntimeProcess, port: int) -> None:
        """Follows the runtime's status stream; reconnects while it lives.

        A runtime its template watches (control/hangs.py) is never pinged: a
        stop is heard from the template, and the stream is then dropped until
        the runtime continues. Any other runtime is pinged by its client.
        """
        rec = await self._records.find(self.pipeline_id)
        name = rec.name if rec else self.pipeline_id
        hangs = self._runner.hangs
        news = _HangNews(hangs, proc.pid)
        thawed, changed = news.thawed, news.changed
        backoff = 0.05
        try:
            while not proc.exited.is_set():
                covered = hangs is not None and hangs.covers(proc.pid)
                news.count("template" if covered else "pings")
                if not thawed.is_set():
                    self.hung = True
                    self._disconnected()
                    self.poke()
                    await _first(thawed.wait(), proc.exited.wait())
                    self.hung = False
                    continue
                changed.clear()
                pings: Pings = "never" if covered else "always"
                client = self._client
                if client is None or client.pings != pings:
                    if client is not None:
                        await client.close()
                    self._client = client = RuntimeClient(
                        port, name, proc.token, epoch=self._lease.epoch, pings=pings
                    )
                if not await _first(self._follow(client), changed.wait()):
                    return  # fenced
                if changed.is_set() and thawed.is_set():
                    # Only who finds a hang changed (template gone or found):
                    # reconnect with or without pings, with no blip in between.
                    continue
                if self.connected:
                    backoff = 0.05  # it answered: a break now is news, retry soon
                self._disconnected()
                if changed.is_set():
                    continue  # stopped: wait for the thaw
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.exited.wait(), backoff)
                backoff = min(backoff * 2, 1.0)
        finally:
            news.close()

    async def _follow(self, client: RuntimeClient) -> bool:
        """Reads the status stream until it breaks; False if a newer owner fenced us."""
        try:
            async for report in client.watch():
                self.report = report
                self.connected = True
                self.poke()
        except grpc.aio.AioRpcError as exc:
            if is_fenced(exc):
                # A newer owner commands the runtime: this actor ends (next pass).
                self._lease.revoked = True
                self.connected = False
                self.poke()
                return False
            log.debug("pipeline %s: status stream broke: %s", self.pipeline_id, exc.code())
        return True

    def _disconnected(self) -> None:
        if self.connected or self._pushed_desired is not None:
            self.connected = False
            self._pushed_desired = None
            self.poke()


class _HangNews:
    """What the template says of one runtime (control/hangs.py), as events to await.

    `thawed` is clear while the runtime is stopped; `changed` is set by any
    news (stopped, continued, or the template gone). It also keeps the
    RUNTIMES_WATCHED gauge counting this runtime under the right label.
    """

    def __init__(self, hangs: HangWatch | None, pid: int) -> None:
        self.thawed = asyncio.Event()
        self.changed = asyncio.Event()
        self._forget = hangs.listen(pid, self._on) if hangs is not None else None
        if hangs is None or not hangs.is_stopped(pid):
            self.thawed.set()
        self._counted: str | None = None

    def _on(self, event: str) -> None:
        if event == "stopped":
            self.thawed.clear()
        else:
            self.thawed.set()
        self.changed.set()

    def count(self, by: str) -> None:
        if by != self._counted:
            if self._counted is not None:
                RUNTIMES_WATCHED.labels(self._counted).dec()
            RUNTIMES_WATCHED.labels(by).inc()
            self._counted = by

    def close(self) -> None:
        if self._forget is not None:
            self._forget()
        if self._counted is not None:
            RUNTIMES_WATCHED.labels(self._counted).dec()
            self._counted = None


async def _first(main: Awaitable[T], interrupt: Awaitable[Any]) -> T | bool:
    """`main`'s result, or True if `interrupt` completes first (then `main` is cancelled)."""
    main_task = asyncio.ensure_future(main)
    other = asyncio.ensure_future(interrupt)
    try:
        await asyncio.wait({main_task, other}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (main_task, other):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if main_task.done() and not main_task.cancelled():
        return main_task.result()
    return True


def bootstrap_policy(rec: PipelineRecord) -> str:
    """What the runtime does with a checkpoint of another program (runtime/bootstrap.py).

    An approval already given for this deployment makes it "allow": a
    runtime spawned again for it does not ask twice.
    """
    if rec.bootstrap_approved:
        return "allow"
    return rec.bootstrap_policy or DEFAULT_POLICY


def _unreachable_details(rec: PipelineRecord) -> dict[str, Any]:
    """What a pipeline whose runtime does not answer waits on (a hung or busy process)."""
    details: dict[str, Any] = {
        "unreachable": "the runtime does not answer; the manager keeps reconnecting"
    }
    if rec.runtime_desired == SUSPENDED:
        details["suspend"] = {"phase": "waiting", "waiting_for": ["the runtime to answer"]}
    return details


def _observed(report: Report, storage: bool) -> dict[str, Any]:
    """The record fields a status report determines.

    With storage enabled, storage_status_details lists the checkpoints even
    when there are none (`{"checkpoints": []}`), as Feldera's runtime reports
    them whenever it has a storage backend (adapters/src/server.rs get_status).
    """
    observed: dict[str, Any] = {
        "runtime_status": runtime_wire.state_name(report.state),
        "runtime_status_details": (
            runtime_wire.plain(report.details) if report.HasField("details") else None
        ),
    }
    if report.checkpoints or storage:
        checkpoints = runtime_wire.checkpoint_dicts(report.checkpoints)
        observed["storage_status_details"] = {"checkpoints": checkpoints}
    return observed
