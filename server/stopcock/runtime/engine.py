"""The runtime's state: the pipeline's database, its checkpoints, its status.

One `Engine` per runtime process.

Threads. Every use of the database (ingest, query, a checkpoint's copy) runs
on one dedicated thread, in submission order. That is what makes a
checkpoint a consistent cut: its copy (`CheckpointStore.stage`) runs between
two ingest transactions, never inside one. Making it durable (fsync, rename,
manifest) happens on a second thread, so ingest goes on meanwhile.

Suspend. Asked to go Suspended, the engine first stops taking input (an
ingest submitted after that moment is refused, one submitted before it is in
the database before the final checkpoint's serialize() runs, since both go
through the same FIFO thread), then takes the final checkpoint and reports
Suspended. A temporary storage error is retried with backoff and no
deadline, with progress in the status details; a permanent one reports
Failed (error SuspendFailed), which the manager turns into a forced stop.

Status. Every change goes through `_publish`, which bumps a sequence number
and wakes the watchers: the manager is told of each change as it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sqlite3
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from stopcock.program import load_program
from stopcock.runtime import data
from stopcock.runtime.checkpoints import CheckpointError, CheckpointInfo, CheckpointStore, Staged
from stopcock.runtime.checkpoints import now_rfc3339 as now
from stopcock.runtime.memdb import MemoryDatabase

log = logging.getLogger("stopcock.runtime")
T = TypeVar("T")

INITIALIZING = "Initializing"
RUNNING = "Running"
PAUSED = "Paused"
SUSPENDED = "Suspended"
FAILED = "Failed"
DESIRABLE = (RUNNING, PAUSED, SUSPENDED)
SUSPEND_BACKOFF_MAX = 5.0


@dataclass(frozen=True, slots=True)
class Status:
    status: str
    desired_status: str
    error: dict[str, Any] | None
    sequence: int
    details: dict[str, Any] | None = None
    checkpoints: list[dict[str, Any]] = field(default_factory=list)


class DesiredStatusRefused(Exception):
    """The runtime cannot work towards the desired status asked for."""


class NotTakingInput(Exception):
    """Ingest, query or checkpoint asked of a runtime in the wrong state."""


class Engine:
    def __init__(
        self,
        *,
        deployment_id: str,
        program_code: str,
        initial: str,
        storage: CheckpointStore | None,
        checkpoint_interval: float | None,
    ) -> None:
        self.deployment_id = deployment_id
        self.incarnation_uuid = str(uuid.uuid4())
        self._program_code = program_code
        self._storage = storage
        self._interval = checkpoint_interval
        self._status = Status(INITIALIZING, initial, None, 0)
        self._changed = asyncio.Condition()
        self._db_thread = ThreadPoolExecutor(1, thread_name_prefix="db")
        self._io_thread = ThreadPoolExecutor(1, thread_name_prefix="checkpoint-io")
        self._memdb: MemoryDatabase | None = None
        self._db: sqlite3.Connection | None = None
        self.processed_records = 0
        self._suspending = False
        self._next_checkpoint = 0
        self._checkpoint_lock = asyncio.Lock()
        self.checkpoint_success: int | None = None
        self.checkpoint_failure: dict[str, Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- status --------------------------------------------------------

    @property
    def status(self) -> Status:
        return self._status

    async def _publish(self, **changes: Any) -> None:
        async with self._changed:
            old = self._status
            fields = {
                "status": old.status,
                "desired_status": old.desired_status,
                "error": old.error,
                "details": old.details,
                "checkpoints": old.checkpoints,
                **changes,
            }
            self._status = Status(sequence=old.sequence + 1, **fields)
            if old.status != self._status.status:
                log.info("status %s -> %s", old.status, self._status.status)
            self._changed.notify_all()

    async def wait_for_change(self, after_sequence: int) -> Status:
        async with self._changed:
            await self._changed.wait_for(lambda: self._status.sequence > after_sequence)
            return self._status

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, fn, *args)

    # -- start-up ------------------------------------------------------

    def _open_database(self) -> tuple[MemoryDatabase, CheckpointInfo | None]:
        restored = self._storage.latest() if self._storage is not None else None
        if restored is None:
            memdb = MemoryDatabase.open()
            load_program(memdb.db, self._program_code)
            return memdb, None
        info, path = restored
        return MemoryDatabase.open(restore_from=path), info

    async def initialize(self) -> None:
        """Restores the latest checkpoint (or loads the program), then goes to work."""
        try:
            memdb, info = await self._on_db(self._open_database)
            self._memdb, self._db = memdb, memdb.db
            checkpoints = self._storage.list() if self._storage is not None else []
        except (sqlite3.Error, CheckpointError, OSError) as exc:
            await self._publish(
                status=FAILED,
                error={
                    "message": f"The pipeline failed to initialize: {exc}",
                    "error_code": "RuntimeInitializationFailed",
                    "details": {"error": str(exc)},
                },
            )
            return
        if info is not None:
            self.processed_records = info.processed_records
            log.info("restored checkpoint %s (%d records)", info.uuid, info.processed_records)
        desired = self._status.desired_status
        await self._publish(
            status=PAUSED if desired == SUSPENDED else desired,
            checkpoints=[c.public() for c in checkpoints],
        )
        if desired == SUSPENDED:
            self._begin_suspend()
        if self._storage is not None:
            # Files a killed runtime did not get to delete (see remove_unlisted).
            asyncio.get_running_loop().run_in_executor(
                self._io_thread, self._storage.remove_unlisted
            )
        if self._interval is not None and self._storage is not None:
            self._spawn(self._periodic_checkpoints(self._interval))

    # -- desired status ------------------------------------------------

    async def set_desired(self, desired: str) -> None:
        if desired not in DESIRABLE:
            raise DesiredStatusRefused(f"unknown desired status '{desired}'")
        current = self._status
        if current.status == FAILED:
            raise DesiredStatusRefused("the runtime has failed")
        if self._suspending or current.status == SUSPENDED:
            if desired == SUSPENDED:
                return
            raise DesiredStatusRefused("the runtime is suspending: it only stops now")
        if desired == SUSPENDED and self._storage is None:
            raise DesiredStatusRefused("storage is disabled: there is nowhere to checkpoint")
        if current.status == INITIALIZING:
            # Remembered: `initialize` goes there once ready.
            await self._publish(desired_status=desired)
            return
        if desired == SUSPENDED:
            await self._publish(desired_status=SUSPENDED)
            self._begin_suspend()
        elif current.status != desired or current.desired_status != desired:
            await self._publish(status=desired, desired_status=desired)

    def _begin_suspend(self) -> None:
        self._suspending = True  # from here on, no input is taken
        self._spawn(self._suspend())

    async def _suspend(self) -> None:
        backoff, attempts = 0.1, 0
        while True:
            attempts += 1
            try:
                await self._checkpoint(self._take_sequence_number())
            except CheckpointError as exc:
                if not exc.temporary:
                    await self._publish(
                        status=FAILED,
                        error={
                            "message": f"The suspend failed: its final checkpoint could not be "
                            f"written ({exc})",
                            "error_code": "SuspendFailed",
                            "details": {"error": str(exc), "attempts": attempts},
                        },
                    )
                    return
                delay = backoff * random.uniform(0.8, 1.2)
                log.warning("suspend: checkpoint attempt %d failed (%s); retrying", attempts, exc)
                await self._publish(
                    details={
                        "suspend": {
                            "attempts": attempts,
                            "last_error": str(exc),
                            "retrying_in_secs": round(delay, 3),
                        }
                    }
                )
                await asyncio.sleep(delay)  # backoff between retries, not a poll
                backoff = min(backoff * 2, SUSPEND_BACKOFF_MAX)
                continue
            self._release_database()
            await self._publish(status=SUSPENDED, details=None)
            return

    def _release_database(self) -> None:
        """Frees the database once the final checkpoint holds it (suspend only).

        Freeing 100 MB of tmpfs takes ~20-30 ms. Started now, on the database
        thread, it overlaps with the manager's handling of Suspended instead
        of delaying the process's exit after the kill.
        """
        memdb, self._memdb, self._db = self._memdb, None, None
        if memdb is not None:
            asyncio.get_running_loop().run_in_executor(self._db_thread, memdb.close)

    # -- checkpoints -----------------------------------------------------

    def _take_sequence_number(self) -> int:
        seq = self._next_checkpoint
        self._next_checkpoint += 1
        return seq

    def request_checkpoint(self) -> int:
        """Starts a checkpoint in the background; returns its sequence number."""
        if self._storage is None:
            raise NotTakingInput("storage is disabled")
        if self._db is None:
            raise NotTakingInput("the runtime is initializing")
        seq = self._take_sequence_number()

        async def run() -> None:
            with contextlib.suppress(CheckpointError):  # recorded in checkpoint_failure
                await self._checkpoint(seq)

        self._spawn(run())
        return seq

    def _stage(self) -> tuple[Staged, int]:
        assert self._storage is not None and self._memdb is not None
        return self._storage.stage(self._memdb), self.processed_records

    async def _checkpoint(self, seq: int) -> CheckpointInfo:
        storage = self._storage
        assert storage is not None
        loop = asyncio.get_running_loop()
        async with self._checkpoint_lock:
            try:
                staged, processed = await self._on_db(self._stage)
                try:
                    info = await loop.run_in_executor(
                        self._io_thread, storage.commit, staged, processed, seq
                    )
                except BaseException:
                    storage.discard(staged)
                    raise
            except CheckpointError as exc:
                self.checkpoint_failure = {
                    "sequence_number": seq,
                    "error": str(exc),
                    "failed_at": now(),
                }
                raise
            self.checkpoint_success = seq
            log.info("checkpoint %d written (%d bytes)", seq, info.size)
            checkpoints = await loop.run_in_executor(self._io_thread, storage.list)
            await self._publish(checkpoints=[c.public() for c in checkpoints])
        # After the lock and the report: nobody waits for the old files to go.
        loop.run_in_executor(self._io_thread, storage.remove_unlisted)
        return info

    async def _periodic_checkpoints(self, interval: float) -> None:
        while not self._suspending:
            await asyncio.sleep(interval)  # the checkpoint period (a timer)
            if self._suspending or self._status.status not in (RUNNING, PAUSED):
                continue
            try:
                await self._checkpoint(self._take_sequence_number())
            except CheckpointError as exc:
                log.error("periodic checkpoint failed: %s", exc)

    # -- data ------------------------------------------------------------

    def _check_input(self, force: bool) -> None:
        status = self._status.status
        if self._suspending or status in (SUSPENDED, FAILED):
            raise NotTakingInput("the pipeline is suspending: it takes no more input")
        if status == INITIALIZING or self._db is None:
            raise NotTakingInput("the pipeline is initializing")
        if status == PAUSED and not force:
            raise NotTakingInput("the pipeline is paused: resume it, or push with force=true")

    async def ingest(
        self, table: str, update_format: str, array: bool, force: bool, payload: bytes
    ) -> int:
        self._check_input(force)
        # No await between the check above and the submission below: a
        # suspend that starts after the check is queued behind this ingest.
        db = self._db
        assert db is not None

        def apply() -> int:
            count = data.ingest(db, table, update_format, array, payload)
            self.processed_records += count
            return count

        return await self._on_db(apply)

    async def query(self, sql: str) -> list[bytes]:
        if self._db is None or self._status.status not in (RUNNING, PAUSED):
            raise NotTakingInput(f"the pipeline is {self._status.status}")
        return await self._on_db(data.query, self._db, sql)


def status_json(status: Status) -> str:
    return json.dumps(status.error) if status.error else ""
