"""The runtime's state: the pipeline's database, its checkpoints, its status.

One `Engine` per runtime process.

Length (~480 lines): one class owns the runtime's state and the threads that
touch it (status, suspend, checkpoints, ingest); what stands alone lives
beside it (queries, memdb, checkpoints, data, splitter, spool). Splitting
the class further would spread its locking rules over several files.

Threads. Every use of the database (ingest, query, a checkpoint's copy) runs
on one dedicated thread, in submission order. That is what makes a
checkpoint a consistent cut: its copy (`CheckpointStore.stage`) runs between
two ingest transactions, never inside one. Making it durable (fsync, rename,
manifest) happens on a second thread, so ingest goes on meanwhile.

Queries run on reader connections of their own, on threads of their own,
each on a WAL snapshot (see memdb): they never wait for the database thread
nor hold it. Each ends when its client goes away, after the query timeout,
or at once when a suspend begins.

Ingest bodies may be any size. A body of one chunk is parsed and applied on
the database thread at once; a longer one is parsed and checked chunk by
chunk as it arrives, its rows spooled (see spool), and applied in one
transaction once all of it has arrived: a slow client holds nothing.

Suspend. Asked to go Suspended, the engine first stops taking input (an
ingest applied after that moment is refused, and bodies still arriving are
cut off at once; one submitted before it is in the database before the final
checkpoint's copy runs, since both go through the same FIFO thread), stops
every query, then takes the final checkpoint and reports Suspended. While it
waits (for ingests being applied, a checkpoint under way) the status details
say on what. A temporary storage error is retried with backoff and no
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
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from stopcock.contract.statuses import RUNTIME_DESIRABLE, Runtime
from stopcock.program import catalog, load_program
from stopcock.runtime import bootstrap, data
from stopcock.runtime.adhoc_insert import typed_rows
from stopcock.runtime.checkpoints import CheckpointError, CheckpointInfo, CheckpointStore, Staged
from stopcock.runtime.checkpoints import now_rfc3339 as now
from stopcock.runtime.csv_rows import Column, CsvRecords, csv_columns
from stopcock.runtime.memdb import MemoryDatabase
from stopcock.runtime.queries import NotServing, Queries, render_whole
from stopcock.runtime.splitter import UpdateSplitter
from stopcock.runtime.spool import Spool
from stopcock.sql.adhoc import Insert
from stopcock.sql.messages import CompileError

log = logging.getLogger("stopcock.runtime")
T = TypeVar("T")

INITIALIZING = Runtime.INITIALIZING.value
RUNNING = Runtime.RUNNING.value
PAUSED = Runtime.PAUSED.value
SUSPENDED = Runtime.SUSPENDED.value
FAILED = Runtime.FAILED.value
BOOTSTRAPPING = Runtime.BOOTSTRAPPING.value
AWAITING_APPROVAL = Runtime.AWAITING_APPROVAL.value
# Before these the runtime takes no commands but remembers the desired status.
STARTING = (INITIALIZING, BOOTSTRAPPING, AWAITING_APPROVAL)
DESIRABLE = tuple(status.value for status in RUNTIME_DESIRABLE)
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
        query_timeout: float = 60.0,
        spool_dir: Path | None = None,
        bootstrap_policy: str = "allow",
    ) -> None:
        self.deployment_id = deployment_id
        self.incarnation_uuid = str(uuid.uuid4())
        # For GET /stats: Unix seconds and a monotonic origin for the uptime.
        self.started_at = time.time()
        self.started_monotonic = time.monotonic()
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
        # Feldera's connector_stats.num_errors: the bad updates (records) of
        # every refused ingest so far (a JSON refusal names one).
        self.input_errors = 0
        self._suspending = False
        self._next_checkpoint = 0
        self._checkpoint_lock = asyncio.Lock()
        self.checkpoint_success: int | None = None
        self.checkpoint_failure: dict[str, Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.queries = Queries(query_timeout)
        # The relations ad-hoc queries may read (Feldera SQL over them). A
        # program stored by an older Stopcock (SQLite DDL) may not compile:
        # its queries then run as SQLite SQL, unchecked, as they did.
        with contextlib.suppress(CompileError):
            self.queries.catalog = catalog(program_code)
        self._spool_dir = spool_dir or Path(".")
        # Checks streamed ingest chunks; the database thread only applies them.
        self._parse_thread = ThreadPoolExecutor(1, thread_name_prefix="parse")
        self._input_closed = asyncio.Event()
        self._applying = 0  # ingests submitted to the database thread, not yet done
        # What a restore of a checkpoint of another program does (see bootstrap).
        self._bootstrap_policy = bootstrap_policy
        self._approved = asyncio.Event()

    @property
    def ingests_in_flight(self) -> int:
        return self._applying

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

    def _open_database(
        self,
    ) -> tuple[MemoryDatabase, CheckpointInfo | None, bootstrap.Plan | None]:
        restored = self._storage.latest() if self._storage is not None else None
        if restored is None:
            memdb = MemoryDatabase.open()
            load_program(memdb.db, self._program_code)
            bootstrap.stamp(memdb.db, self._program_code)
            return memdb, None, None
        info, path = restored
        memdb = MemoryDatabase.open(restore_from=path, wal_size=info.wal_size)
        if bootstrap.stamped(memdb.db) == bootstrap.program_stamp(self._program_code):
            return memdb, info, None  # the checkpoint holds this very program
        plan = bootstrap.plan(memdb.db, self._program_code)
        return memdb, info, plan if plan.needs_rewrite else None

    async def _bootstrap(self, memdb: MemoryDatabase, plan: bootstrap.Plan) -> bool:
        """Follows the bootstrap policy, then rewrites the restored database.

        False when the policy rejects the change (the status then says so).
        Nothing is written to storage: the checkpoint stays as it was until
        the next one is taken, as in Feldera.
        """
        if not plan.diff.empty:
            diff = plan.diff.pipeline_diff()
            log.info("the program changed since the checkpoint: %s", plan.diff.program_diff())
            blocked = bootstrap.non_materialized_sources(plan, self._materialized_tables(plan))
            if blocked:
                # Checked before the policy, as Feldera's controller does.
                listed = ", ".join(f"'{t}'" for t in blocked)
                await self._publish(
                    status=FAILED,
                    error={
                        "message": "The pipeline has been modified since the last checkpoint; "
                        "however it cannot be bootstrapped due to the following reasons:\n"
                        "- The following tables are not materialized, but some of the views "
                        f"that depend on these tables require bootstrapping: {listed}. We "
                        "recommend materializing all tables in the program to avoid such errors "
                        "in the future",
                        "error_code": "BootstrapNotAllowed",
                        "details": {"tables": blocked, "approval_diff": diff},
                    },
                )
                return False
            if self._bootstrap_policy == "reject":
                await self._publish(
                    status=FAILED,
                    error={
                        "message": "Bootstrapping of the modified pipeline was rejected by "
                        "the user.",
                        "error_code": "BootstrapRejected",
                        "details": {"approval_diff": diff},
                    },
                )
                return False
            if self._bootstrap_policy == "await_approval" and not self._approved.is_set():
                await self._publish(status=AWAITING_APPROVAL, details={"approval_diff": diff})
                await self._approved.wait()
                if self._suspending:
                    return False  # suspended while it waited (see set_desired)
            await self._publish(
                status=BOOTSTRAPPING,
                details={"reason": "bootstrapping the modified program", "bootstrap_diff": diff},
            )
        await self._on_db(bootstrap.apply, memdb.db, plan)
        await self._on_db(bootstrap.stamp, memdb.db, self._program_code)
        return True

    def _materialized_tables(self, plan: bootstrap.Plan) -> set[str]:
        """The program's materialized tables: every table for a program stored by an older
        Stopcock in SQLite's own dialect, which has no such notion (no catalog)."""
        compiled = self.queries.catalog
        if compiled is None:
            return {r.name.lower() for r in plan.new if r.kind == "table"}
        return {r.name.lower() for r in compiled.relations if r.kind == "table" and r.materialized}

    async def approve(self) -> None:
        """Lets an awaited bootstrap proceed; returns once it is past AwaitingApproval."""
        self._bootstrap_policy = "allow"
        self._approved.set()
        async with self._changed:
            await self._changed.wait_for(lambda: self._status.status != AWAITING_APPROVAL)

    async def initialize(self) -> None:
        """Restores the latest checkpoint (or loads the program), then goes to work."""
        try:
            memdb, info, plan = await self._on_db(self._open_database)
            if plan is not None and not await self._bootstrap(memdb, plan):
                return
            self._memdb, self._db = memdb, memdb.db
            self.queries.open(memdb.readers)
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
            details=None,
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
        if desired == SUSPENDED and current.status == AWAITING_APPROVAL:
            # Nothing was taken in since the checkpoint it restored, which is
            # therefore the suspend's own: done at once, without waiting for
            # an approval that may never come.
            self._suspending = True
            await self._publish(status=SUSPENDED, desired_status=SUSPENDED, details=None)
            return
        if current.status in STARTING:
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
        self._input_closed.set()  # bodies still arriving are cut off
        self.queries.stop_all()
        self._spawn(self._suspend())

    def _suspend_waits_on(self) -> list[str]:
        waits = []
        if self._applying:
            waits.append(f"{self._applying} ingress request(s) being applied")
        if self._checkpoint_lock.locked():
            waits.append("a checkpoint already being written")
        return waits

    async def _suspend(self) -> None:
        backoff, attempts = 0.1, 0
        waits = self._suspend_waits_on()
        if waits:
            log.info("suspend: waiting for %s", ", ".join(waits))
        waits.append("the final checkpoint to be written")
        await self._publish(details={"suspend": {"phase": "checkpointing", "waiting_for": waits}})
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
                            "phase": "retrying",
                            "waiting_for": ["storage to accept the final checkpoint"],
                            "attempts": attempts,
                            "last_error": str(exc),
                            "retrying_in_secs": round(delay, 3),
                        }
                    }
                )
                await asyncio.sleep(delay)  # backoff between retries, not a poll
                backoff = min(backoff * 2, SUSPEND_BACKOFF_MAX)
                continue
            self._spawn(self._release_database())
            await self._publish(status=SUSPENDED, details=None)
            return

    async def _release_database(self) -> None:
        """Frees the database once the final checkpoint holds it (suspend only).

        Freeing 100 MB of tmpfs takes ~20-30 ms. Started now, on the database
        thread, it overlaps with the manager's handling of Suspended instead
        of delaying the process's exit after the kill. It waits for every
        reader to be handed back (the queries were stopped: at once).
        """
        memdb, self._memdb, self._db = self._memdb, None, None
        if memdb is None:
            return
        await self.queries.take_back(len(memdb.readers))
        await self._on_db(memdb.close)

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
        if status in STARTING or self._db is None:
            raise NotTakingInput("the pipeline is initializing")
        if status == PAUSED and not force:
            raise NotTakingInput("the pipeline is paused: resume it, or push with force=true")

    async def ingest(
        self,
        table: str,
        update_format: str,
        array: bool,
        force: bool,
        chunks: AsyncIterator[bytes],
        *,
        fmt: str = "json",
    ) -> int:
        """Ingests a body arriving in chunks, all or nothing; returns the updates applied.

        `fmt` is "json" or "csv" (whose records are insertions: Feldera
        ignores `update_format` and `array` for CSV).
        """
        try:
            return await self._ingest(table, update_format, array, force, chunks, fmt=fmt)
        except data.DataError as exc:
            if exc.http_status == 400:  # the body is at fault
                self.input_errors += int(exc.details.get("num_errors", 1))
                await self._publish()  # a new report carries the count
            raise

    async def _ingest(
        self,
        table: str,
        update_format: str,
        array: bool,
        force: bool,
        chunks: AsyncIterator[bytes],
        *,
        fmt: str,
    ) -> int:
        self._check_input(force)
        csv = fmt == "csv"
        if not csv:
            data.check_update_format(update_format)
        first = await self._next_chunk(chunks)
        second = None if first is None else await self._next_chunk(chunks)
        if second is None and not csv:
            return await self._apply_whole(table, update_format, array, force, first or b"")
        db = self._db
        assert db is not None
        shape = await self._on_db(data.table_shape, db, table)
        inserts, deletes = Spool(self._spool_dir), Spool(self._spool_dir)
        loop = asyncio.get_running_loop()
        check: Callable[[bytes | None], None]
        if csv:
            relation = (
                compiled.find(shape.name, True) if (compiled := self.queries.catalog) else None
            )
            types = (
                {f.name: str(f.columntype.get("type", "")) for f in relation.fields}
                if relation
                else None
            )
            records = CsvRecords(shape.table, await self._on_db(csv_columns, db, shape, types))

            def check(chunk: bytes | None) -> None:
                if chunk is not None:
                    inserts.add(records.feed(chunk))
                else:
                    inserts.add(records.finish())
                    records.check()

        else:
            splitter = UpdateSplitter(array, shape.table)
            index = 0

            def check(chunk: bytes | None) -> None:
                nonlocal index
                updates = splitter.feed(chunk) if chunk is not None else splitter.finish()
                ins, dels = data.to_rows(shape, update_format, updates, index)
                index += len(updates)
                inserts.add(ins)
                deletes.add(dels)

        try:
            chunk: bytes | None = first
            await loop.run_in_executor(self._parse_thread, check, chunk)
            chunk = second
            while chunk is not None:
                await loop.run_in_executor(self._parse_thread, check, chunk)
                chunk = await self._next_chunk(chunks)
            await loop.run_in_executor(self._parse_thread, check, None)
            self._check_input(force)
            # No await between the check above and the submission below.
            return await self._apply(
                lambda: data.apply(db, shape, inserts.batches(), deletes.batches())
            )
        except OSError as exc:  # the spool's disk is full, or its file is gone
            raise data.out_of_room(str(exc)) from exc
        finally:
            inserts.close()
            deletes.close()

    async def _apply_whole(
        self, table: str, update_format: str, array: bool, force: bool, body: bytes
    ) -> int:
        self._check_input(force)
        db = self._db
        assert db is not None
        # No await between the check above and the submission below: a
        # suspend that starts after the check is queued behind this ingest.
        return await self._apply(lambda: data.ingest(db, table, update_format, array, body))

    async def _apply(self, work: Callable[[], int]) -> int:
        def run() -> int:
            count = work()
            self.processed_records += count
            return count

        self._applying += 1
        try:
            return await self._on_db(run)
        finally:
            self._applying -= 1

    async def insert(self, statement: Insert) -> int:
        """An ad-hoc INSERT, applied exactly as a JSON ingress of its rows is.

        Checked, applied in one transaction, counted and refused in the
        same states as ingress. Feldera blocks an INSERT on a paused
        pipeline until it is resumed; Stopcock refuses it (503), as it
        refuses ingress without force.
        """
        if self._status.status == PAUSED and not self._suspending:
            raise NotTakingInput(
                "the pipeline is paused: resume it to INSERT (Stopcock refuses an ad-hoc "
                "INSERT while paused, as it refuses ingress)"
            )
        table = statement.table
        # Ingress's name rules: a lowercase name is found as declared unquoted;
        # another only quoted (exactly).
        if table != table.lower():
            table = f'"{table}"'
        compiled = self.queries.catalog

        def columns() -> list[Column]:
            assert db is not None
            shape = data.table_shape(db, table)
            relation = compiled.find(shape.name, True) if compiled else None
            if relation is None:
                return csv_columns(db, shape)
            types = {f.name: str(f.columntype.get("type", "")) for f in relation.fields}
            return csv_columns(db, shape, types)

        self._check_input(force=False)
        db = self._db
        # No await between the check above and the submission below: the
        # database is open until a suspend's checkpoint, queued after this.
        try:
            rows = typed_rows(statement, await self._on_db(columns))
        except data.DataError as exc:
            if exc.http_status == 400:  # a bad value: counted as a refused ingress is
                self.input_errors += 1
                await self._publish()
            raise
        body = json.dumps(rows, allow_nan=False).encode()

        async def chunks() -> AsyncIterator[bytes]:
            yield body

        return await self.ingest(table, "raw", True, False, chunks())

    async def _next_chunk(self, chunks: AsyncIterator[bytes]) -> bytes | None:
        """The body's next chunk, None at its end; NotTakingInput once a suspend began."""
        if self._input_closed.is_set():
            raise NotTakingInput("the pipeline is suspending: it takes no more input")
        arrival = asyncio.ensure_future(anext(chunks, None))
        closed = asyncio.ensure_future(self._input_closed.wait())
        try:
            await asyncio.wait((arrival, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not arrival.done():
                arrival.cancel()
        if not arrival.done() or arrival.cancelled():
            raise NotTakingInput("the pipeline is suspending: it takes no more input")
        return arrival.result()

    async def query(self, sql: str, fmt: str = "json") -> AsyncGenerator[bytes, None]:
        """The answer to an ad-hoc statement, in chunks in format `fmt`.

        A SELECT reads a snapshot (see stopcock.runtime.queries). An INSERT
        is an ingress (see `insert`); its answer is Feldera's, one `count` row.
        """
        if self._db is None or self._status.status not in (RUNNING, PAUSED):
            raise NotTakingInput(f"the pipeline is {self._status.status}")
        statement = self.queries.parse(sql)
        if isinstance(statement, Insert):
            count = await self.insert(statement)
            yield render_whole(fmt, ["count"], [(count,)])
            return
        rows = self.queries.run(statement, fmt)
        try:
            async for chunk in rows:
                yield chunk
        except NotServing:
            raise NotTakingInput("the pipeline is suspending") from None
        finally:
            await rows.aclose()  # at once: it hands its reader back
