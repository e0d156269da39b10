"""A Jepsen-style history test: random lifecycle calls from concurrent clients to three
replicas while a nemesis crashes, freezes and cuts them off, then a checker over the
recorded history, the database and the processes.

Everything is real: three manager replicas (STOPCOCK_LEASE_TTL_SECS=2), their runtime
processes, and a PostgreSQL server of this test's own (it is crashed and restarted, so
the session's server is not used). The run, in order:

* setup: a handful of pipelines, created and compiled;
* CLIENTS threads send random StartPipeline / StopPipeline (force or not) /
  PausePipeline / ResumePipeline / GetPipeline calls to random replicas, each with a
  deadline of CALL_TIMEOUT, recording client, replica, operation, invoke and completion
  times (time.monotonic, only ever compared with each other, to order operations),
  outcome (ok, a definite error code, or indeterminate: the call may or may not have
  taken effect) and, after every acknowledged write, a GetPipeline on the same replica;
* a monitor thread samples, every SAMPLE_SECS, each pipeline's row and lease epoch, the
  new rows of `pipeline_history` (so that versions pruned later are kept), the runtime
  processes in /proc and each runtime's epoch file;
* a nemesis thread runs a schedule drawn from a seed (printed; set it with
  STOPCOCK_HISTORY_SEED): kill -9 of a replica and its restart, SIGSTOP of the owner of
  a pipeline for longer than the lease then SIGCONT, and one immediate stop and restart
  of PostgreSQL;
* then the faults stop, the clients stop and `check` verifies the properties listed at
  its functions (durable, ordered versions; acknowledged writes; growing epochs; one
  runtime per pipeline; convergence; no orphan process).

On a failure the message carries the slice of the history around the offence and the
directory of the manager logs (manager.log, manager-1.log, manager-2.log).
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from stopcock.manager.control.runner import runtime_run_dir
from stopcock.v1 import pipeline_service_pb2 as pb

from tests.postgres import EmbeddedPostgres
from tests.support import Stack, process_alive, running_stack, wait_until
from tests.test_replicas import lease

pytestmark = pytest.mark.e2e

REPLICAS = 3
PIPELINES = 4
CLIENTS = 4
TTL = "2"
CALL_TIMEOUT = 3.0  # seconds: the deadline of every client call
FREEZE_SECS = 3.5  # longer than the lease: another replica must take the pipelines over
SAMPLE_SECS = 0.1  # the monitor's period; also the gap between the two samples of check 3
CONVERGE_SECS = 60.0
WAIT_JOIN = 10.0  # seconds: the bound on joining a thread that was told to stop
# Desired statuses an acknowledged write leaves the pipeline in (see check_writes).
ALLOWED = {
    "start:running": {"Running", "Paused"},
    "start:paused": {"Running", "Paused"},
    "stop:force": {"Stopped"},
    "stop:suspend": {"Stopped", "Suspended"},
    "pause": {"Paused"},
    "resume": {"Running"},
}
# Operation weights: writes mostly, reads too (they bound the checks in time).
WEIGHTS = {
    "start:running": 5,
    "start:paused": 2,
    "stop:force": 3,
    "stop:suspend": 3,
    "pause": 3,
    "resume": 3,
    "get": 2,
}
# Error codes after which the call may have taken effect all the same: the replica died,
# froze past the deadline, or lost the database mid-commit (the commit may have landed).
INDETERMINATE = {
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
}


@dataclass
class Op:
    """One call of the history. A read (a client's GetPipeline or a monitor sample)
    carries the version and desired status it saw."""

    process: str  # "client-N" or "monitor"
    replica: int | None  # None: the monitor, which reads the database directly
    pipeline: str  # pipeline name
    op: str  # a key of WEIGHTS
    invoked: float
    completed: float = 0.0
    outcome: str = "pending"  # "ok", a definite error code, or "indeterminate:<code>"
    version: int | None = None
    desired: str | None = None

    def __str__(self) -> str:
        seen = "" if self.version is None else f" -> v{self.version} {self.desired}"
        where = "db" if self.replica is None else f"replica {self.replica}"
        return (
            f"{self.invoked:10.3f}..{self.completed:10.3f} {self.process:9} {where:9} "
            f"{self.pipeline} {self.op}: {self.outcome}{seen}"
        )


@dataclass
class Run:
    """What the threads record; `lock` guards the lists they append to."""

    stack: Stack
    url: str
    names: list[str]
    ids: dict[str, str]  # name -> id
    lock: threading.Lock = field(default_factory=threading.Lock)
    ops: list[Op] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # the nemesis's, with times
    history: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)  # id -> v -> rec
    rows: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)  # sampled rows
    lease_epochs: dict[str, list[int]] = field(default_factory=dict)
    file_epochs: dict[str, list[int]] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    stop_clients: threading.Event = field(default_factory=threading.Event)
    stop_monitor: threading.Event = field(default_factory=threading.Event)

    def record(self, op: Op) -> None:
        with self.lock:
            self.ops.append(op)

    def event(self, what: str) -> None:
        with self.lock:
            self.events.append(f"{time.monotonic():10.3f} nemesis: {what}")
        print(f"nemesis: {what}")


def _seed() -> int:
    given = os.environ.get("STOPCOCK_HISTORY_SEED")
    return int(given) if given else random.SystemRandom().randrange(2**32)


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own: the nemesis crashes it."""
    server = EmbeddedPostgres()
    try:
        yield server
    finally:
        server.close()


def _thread(run: Run, name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
    """A daemon thread whose exception is kept for the test to raise."""

    def body() -> None:
        try:
            target(*args)
        except BaseException as exc:
            run.failures.append(exc)
            run.stop_clients.set()

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    return thread


# -- clients -------------------------------------------------------------------


def _call(stub: Any, op: str, name: str) -> pb.Pipeline | None:
    if op == "get":
        got: pb.Pipeline = stub.GetPipeline(pb.GetPipelineRequest(name=name), timeout=CALL_TIMEOUT)
        return got
    if op.startswith("start:"):
        initial = op.split(":")[1]
        stub.StartPipeline(
            pb.StartPipelineRequest(name=name, initial=initial), timeout=CALL_TIMEOUT
        )
    elif op.startswith("stop:"):
        force = op == "stop:force"
        stub.StopPipeline(pb.StopPipelineRequest(name=name, force=force), timeout=CALL_TIMEOUT)
    elif op == "pause":
        stub.PausePipeline(pb.PausePipelineRequest(name=name), timeout=CALL_TIMEOUT)
    elif op == "resume":
        stub.ResumePipeline(pb.ResumePipelineRequest(name=name), timeout=CALL_TIMEOUT)
    return None


def _invoke(run: Run, process: str, replica: int, op: str, name: str) -> Op:
    entry = Op(process, replica, name, op, time.monotonic())
    try:
        got = _call(run.stack.stubs[replica], op, name)
    except grpc.RpcError as exc:
        code = exc.code()
        entry.outcome = f"indeterminate:{code.name}" if code in INDETERMINATE else code.name
    else:
        entry.outcome = "ok"
        if got is not None:
            entry.version, entry.desired = got.refresh_version, got.deployment_desired_status
    entry.completed = time.monotonic()
    run.record(entry)
    return entry


def _client(run: Run, number: int, rng: random.Random) -> None:
    process = f"client-{number}"
    ops, weights = list(WEIGHTS), list(WEIGHTS.values())
    while not run.stop_clients.is_set():
        replica = rng.randrange(REPLICAS)
        name = rng.choice(run.names)
        op = rng.choices(ops, weights)[0]
        done = _invoke(run, process, replica, op, name)
        if op != "get" and done.outcome == "ok":
            # The version the write left (or a later one), read where it was written.
            _invoke(run, process, replica, "get", name)
        # Paces the random operations (not a wait for anything): a few calls a second
        # per client leave the two cores to the replicas and runtimes.
        time.sleep(rng.uniform(0.05, 0.3))


# -- monitor -------------------------------------------------------------------


def _runtimes(data_dir: Path) -> dict[str, set[int]]:
    """Live runtime processes of the stack by pipeline id, from /proc (one scan).

    Not `stack.runtime_pids(name)`: that asks the REST API for the id, which fails
    while PostgreSQL is down, and scans /proc once per pipeline.
    """
    prefix = str(data_dir / "pipelines") + "/"
    found: dict[str, set[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        # Cold or forked from the template: by argv or by working directory.
        run_dir = str(runtime_run_dir(int(proc.name)))
        if run_dir.startswith(prefix) and process_alive(int(proc.name)):
            found.setdefault(run_dir[len(prefix) :].split("/", maxsplit=1)[0], set()).add(
                int(proc.name)
            )
    return found


def _sample_db(run: Run, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    last = {pid: max(versions, default=0) for pid, versions in run.history.items()}
    ids = list(run.ids.values())
    new = conn.execute(
        "SELECT h.pipeline_id, h.refresh_version, h.record FROM pipeline_history h"
        " JOIN unnest(%s::text[], %s::bigint[]) AS s(id, after)"
        " ON h.pipeline_id = s.id AND h.refresh_version > s.after",
        (ids, [last.get(i, 0) for i in ids]),
    ).fetchall()
    invoked = time.monotonic()
    rows = conn.execute(
        "SELECT p.id, p.name, p.refresh_version, p.deployment_desired_status,"
        " p.deployment_status, p.resources_desired, p.runtime_desired, p.deployment_id,"
        " p.deployment_error, l.epoch"
        " FROM pipelines p JOIN leases l ON l.pipeline_id = p.id"
    ).fetchall()
    completed = time.monotonic()
    with run.lock:
        for pipeline_id, version, record in new:
            run.history.setdefault(str(pipeline_id), {})[int(version)] = json.loads(record)
        for row in rows:
            pid, name, version, desired = str(row[0]), str(row[1]), int(row[2]), str(row[3])
            fields = {
                "deployment_desired_status": desired,
                "deployment_status": row[4],
                "resources_desired": row[5],
                "runtime_desired": row[6],
                "deployment_id": row[7],
                "deployment_error": row[8],
            }
            run.rows.append((pid, version, fields))
            run.lease_epochs.setdefault(pid, []).append(int(row[9]))
            run.ops.append(
                Op("monitor", None, name, "get", invoked, completed, "ok", version, desired)
            )


def _monitor(run: Run) -> None:
    conn: psycopg.Connection[tuple[Any, ...]] | None = None
    previous: dict[str, set[int]] = {}
    try:
        while not run.stop_monitor.is_set():
            if conn is None:
                with contextlib.suppress(psycopg.OperationalError):
                    conn = psycopg.connect(run.url, autocommit=True, connect_timeout=2)
            if conn is not None:
                try:
                    _sample_db(run, conn)
                except psycopg.OperationalError:
                    conn.close()  # PostgreSQL went down: connect again next time
                    conn = None
            for pipeline_id in run.ids.values():
                epoch_file = run.stack.data_dir / "pipelines" / pipeline_id / "run" / "epoch"
                with contextlib.suppress(OSError, ValueError):  # none yet, or none any more
                    epoch = int(epoch_file.read_text())
                    run.file_epochs.setdefault(pipeline_id, []).append(epoch)
            # Two live runtimes of one pipeline count only when the same two (or more)
            # are alive in two consecutive samples: a runtime killed by SIGKILL stays in
            # /proc, not yet a zombie, while the kernel tears it down, and a stop kills
            # the old runtime before a start spawns a new one only as far as the record
            # says; a sample an instant apart could catch the old one on its way out.
            # SAMPLE_SECS later it is gone, unless two really run.
            current = _runtimes(run.stack.data_dir)
            for pipeline_id, pids in current.items():
                both = pids & previous.get(pipeline_id, set())
                if len(both) > 1:
                    with run.lock:
                        run.overlaps.append(
                            f"{time.monotonic():10.3f} pipeline {pipeline_id}: runtimes "
                            f"{sorted(both)} alive in two samples {SAMPLE_SECS}s apart"
                        )
            previous = current
            run.stop_monitor.wait(SAMPLE_SECS)  # the sampling period, not a wait for an event
    finally:
        if conn is not None:
            conn.close()


# -- nemesis -------------------------------------------------------------------


def _schedule(rng: random.Random) -> list[str]:
    """The faults, in a seeded order: two kills, two freezes, one PostgreSQL crash."""
    faults = ["kill", "kill", "freeze", "freeze", "postgres"]
    rng.shuffle(faults)
    return faults


def _nemesis(run: Run, postgres: EmbeddedPostgres, rng: random.Random) -> None:
    stack = run.stack
    for fault in _schedule(rng):
        # Quiet time between faults (a pace, not a wait for an event): the clients
        # work against a healthy cluster too, and failovers finish.
        time.sleep(rng.uniform(1.5, 3.0))
        if fault == "kill":
            victim = rng.randrange(REPLICAS)
            run.event(f"kill -9 replica {victim}")
            stack.kill_manager(victim)
            time.sleep(rng.uniform(0.5, 2.0))  # how long it stays dead: the fault itself
            run.event(f"restart replica {victim}")
            stack.start_manager(victim)
            run.event(f"replica {victim} answers")
        elif fault == "freeze":
            owners = [
                owner
                for pipeline_id in run.ids.values()
                if (owner := lease(stack, pipeline_id)[0]) is not None
            ]
            victim = rng.choice(sorted(owners)) if owners else rng.randrange(REPLICAS)
            manager = stack.managers[victim]
            assert manager is not None
            run.event(f"SIGSTOP replica {victim} (owner of {owners.count(victim)} pipelines)")
            manager.send_signal(signal.SIGSTOP)
            try:
                time.sleep(FREEZE_SECS)  # the freeze itself: longer than the lease
            finally:
                manager.send_signal(signal.SIGCONT)
            run.event(f"SIGCONT replica {victim}")
        else:
            run.event("PostgreSQL: immediate stop")
            postgres.crash()
            try:
                time.sleep(rng.uniform(1.0, 3.0))  # how long it stays down: the fault itself
            finally:
                postgres.restart()
            run.event("PostgreSQL: started again")
    # A last stretch of client calls on a healthy cluster: every client
    # completes a few more calls invoked after the last fault ended.
    healed = time.monotonic()

    def calls_after_healing() -> bool:
        with run.lock:
            done = [o.process for o in run.ops if o.invoked >= healed and o.completed]
        return all(done.count(f"client-{i}") >= 3 for i in range(CLIENTS))

    wait_until(calls_after_healing, "each client's calls on the healed cluster")


# -- the checker ---------------------------------------------------------------


class Checker:
    def __init__(self, run: Run, seed: int) -> None:
        self.run = run
        self.seed = seed
        self.problems: list[str] = []

    def fail(self, what: str, pipeline: str | None = None, around: float | None = None) -> None:
        self.problems.append(what + self.context(pipeline, around))

    def context(self, pipeline: str | None, around: float | None) -> str:
        """The slice of the history near a problem: that pipeline's calls and every fault."""
        if around is None:
            return ""
        lines = [
            str(op)
            for op in sorted(self.run.ops, key=lambda o: o.invoked)
            if (pipeline is None or op.pipeline == pipeline)
            and abs(op.invoked - around) < 3.0
            and (op.process != "monitor" or abs(op.invoked - around) < 0.5)
        ]
        lines += [e for e in self.run.events if abs(float(e.split()[0]) - around) < 10.0]
        return "\n    " + "\n    ".join(sorted(lines))

    def report(self) -> str:
        return (
            f"{len(self.problems)} problem(s) with seed {self.seed} "
            f"(rerun: STOPCOCK_HISTORY_SEED={self.seed}); manager logs in {self.run.stack.root}"
            "\n  - " + "\n  - ".join(self.problems)
        )

    # 1. versions and acknowledged writes -------------------------------------

    def check_versions(
        self, final: dict[str, dict[str, Any]], table: dict[str, dict[int, str]]
    ) -> None:
        """Every version of every pipeline, from creation to its final one, is in the history
        (the monitor's copies, plus the table at the end): strictly increasing by one with no
        gap. A version is written once: each sampled row agrees with the history's record
        of its version (two writers of one version would differ), and every version copied
        during the run, before or after PostgreSQL's crash, is still in the table at the end
        unless pruned as too old (acknowledged = durable)."""
        for name, rec in final.items():
            pipeline_id = rec["id"]
            versions = sorted(self.run.history.get(pipeline_id, {}))
            expected = list(range(1, int(rec["refresh_version"]) + 1))
            if versions != expected:
                missing = sorted(set(expected) - set(versions))
                extra = sorted(set(versions) - set(expected))
                self.fail(
                    f"{name}: versions missing {missing[:20]} or beyond the last {extra[:20]}"
                )
            kept = table.get(pipeline_id, {})
            oldest_kept = min(kept, default=0)
            for version, record in self.run.history.get(pipeline_id, {}).items():
                if version >= oldest_kept and version not in kept:
                    self.fail(f"{name}: version {version} was seen but is lost now")
                elif version in kept and json.loads(kept[version]) != record:
                    self.fail(f"{name}: version {version} changed after it was seen")
        by_id = {pid: name for name, pid in self.run.ids.items()}
        for pipeline_id, version, fields in self.run.rows:
            seen = self.run.history.get(pipeline_id, {}).get(version)
            if seen is None:
                continue  # reported above as a missing version
            differ = {k: (v, seen.get(k)) for k, v in fields.items() if seen.get(k) != v}
            if differ:
                self.fail(
                    f"{by_id[pipeline_id]}: the row at version {version} differs from the "
                    f"history's record of it (two writes of one version?): {differ}"
                )

    def check_reads(self) -> None:
        """Reads are linearizable: a read that begins after another ended sees the same
        version or a newer one (every read is a query of the primary; a write is
        acknowledged once committed), and what it saw is the history's record."""
        for name in self.run.names:
            pipeline_id = self.run.ids[name]
            reads = self._reads(name)
            by_end = sorted(reads, key=lambda o: o.completed)
            ends = [o.completed for o in by_end]
            highest = _running_max([o.version or 0 for o in by_end])
            for read in reads:
                assert read.version is not None
                before = bisect.bisect_left(ends, read.invoked)
                if before and highest[before - 1] > read.version:
                    self.fail(
                        f"{name}: a read saw v{read.version} after another had seen "
                        f"v{highest[before - 1]}: {read}",
                        name,
                        read.invoked,
                    )
                record = self.run.history.get(pipeline_id, {}).get(read.version)
                if record is not None and record["deployment_desired_status"] != read.desired:
                    self.fail(f"{name}: {read} disagrees with the history's {record}")

    def check_writes(self) -> None:
        """Every acknowledged write is in the history, where it belongs.

        Sound under any concurrency: a write takes effect (commits, or finds nothing to
        change) at one instant between its invocation and its answer. At that instant the
        pipeline is at some version v with L <= v <= U, where L is the highest version any
        read that had *completed* before the write was invoked saw, and U the lowest any
        read *invoked* after the answer saw (none: the final version). Whether the write
        changed the record or was a no-op (a repeated start or stop), version v's desired
        status is in ALLOWED[op] (state_machine.py): a force stop leaves Stopped; a suspend
        Suspended, or Stopped (not provisioned yet, or stopping already); pause Paused,
        resume Running; a start leaves Running or Paused, with deployment_initial the
        `initial` asked (a no-op start needs the same initial; a later pause or resume
        changes only the desired status).
        So some version in [L, U] must match. Indeterminate calls prove nothing and are
        not checked; refused ones were refused before writing.
        """
        for name in self.run.names:
            history = self.run.history.get(self.run.ids[name], {})
            reads = self._reads(name)
            by_end = sorted(reads, key=lambda o: o.completed)
            ends, highest = (
                [o.completed for o in by_end],
                _running_max([o.version or 0 for o in by_end]),
            )
            by_start = sorted(reads, key=lambda o: o.invoked)
            starts = [o.invoked for o in by_start]
            lowest = _running_min_from_end([o.version or 0 for o in by_start])
            final = max(history, default=0)
            for write in self.run.ops:
                if write.pipeline != name or write.op == "get" or write.outcome != "ok":
                    continue
                before = bisect.bisect_left(ends, write.invoked)
                low = highest[before - 1] if before else 1
                after = bisect.bisect_right(starts, write.completed)
                high = lowest[after] if after < len(lowest) else final
                if not any(_matches(write.op, history.get(v)) for v in range(low, high + 1)):
                    window = {
                        v: (
                            history[v]["deployment_desired_status"],
                            history[v]["deployment_initial"],
                        )
                        for v in range(low, high + 1)
                        if v in history
                    }
                    self.fail(
                        f"{name}: acknowledged {write.op} ({write}) matches no version in "
                        f"[{low}, {high}] (desired, initial): {window}",
                        name,
                        write.invoked,
                    )

    def _reads(self, name: str) -> list[Op]:
        return [
            o
            for o in self.run.ops
            if o.pipeline == name and o.op == "get" and o.outcome == "ok" and o.version is not None
        ]

    # 2. epochs ---------------------------------------------------------------

    def check_epochs(self, final_leases: dict[str, int]) -> None:
        """A lease's epoch never decreases (each claim increments it), a runtime's durable
        epoch never decreases (it records the highest it heard), and no runtime heard an
        epoch no lease ever had."""
        by_id = {pid: name for name, pid in self.run.ids.items()}
        for what, samples in (("lease", self.run.lease_epochs), ("runtime", self.run.file_epochs)):
            for pipeline_id, epochs in samples.items():
                drops = [(a, b) for a, b in itertools.pairwise(epochs) if b < a]
                if drops:
                    self.fail(f"{by_id[pipeline_id]}: {what} epoch decreased: {drops[:5]}")
        for pipeline_id, epochs in self.run.file_epochs.items():
            if max(epochs) > final_leases[pipeline_id]:
                self.fail(
                    f"{by_id[pipeline_id]}: runtime epoch {max(epochs)} beyond the lease's "
                    f"{final_leases[pipeline_id]}"
                )

    # 3. one runtime per pipeline ------------------------------------------------

    def check_overlaps(self) -> None:
        for overlap in self.run.overlaps:
            self.fail("two live runtimes: " + overlap, None, float(overlap.split()[0]))

    # 4. errors -------------------------------------------------------------------

    def check_errors(self, final: dict[str, dict[str, Any]]) -> None:
        """No deployment error anywhere in the history: no fault of this test touches a
        runtime (replicas die or freeze, the database restarts; runtimes outlive them and
        are re-adopted), the programs compile, storage is on, and provisioning takes far
        less than its timeout. So an error (a runtime that exited, a refused suspend...)
        is not explained by the history; it is reported with the version that set it."""
        for name, rec in final.items():
            history = self.run.history.get(rec["id"], {})
            for version in sorted(history):
                error = history[version].get("deployment_error")
                previous = history.get(version - 1, {}).get("deployment_error")
                if error is not None and error != previous:
                    self.fail(f"{name}: deployment_error set at version {version}: {error}")


def _running_max(values: list[int]) -> list[int]:
    out, best = [], 0
    for v in values:
        best = max(best, v)
        out.append(best)
    return out


def _running_min_from_end(values: list[int]) -> list[int]:
    out, best = [0] * len(values), 2**62
    for i in range(len(values) - 1, -1, -1):
        best = min(best, values[i])
        out[i] = best
    return out


def _matches(op: str, record: dict[str, Any] | None) -> bool:
    if record is None:
        return False
    if record["deployment_desired_status"] not in ALLOWED[op]:
        return False
    if op.startswith("start:"):
        return bool(record["deployment_initial"] == op.split(":")[1].capitalize())
    return True


def _proc_names(root: Path) -> list[str]:
    """Processes whose command line, working directory or open files name `root`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        names: list[str] = []
        with contextlib.suppress(OSError):
            names.append((proc / "cmdline").read_bytes().decode(errors="replace"))
        with contextlib.suppress(OSError):
            names.append(os.readlink(proc / "cwd"))
        with contextlib.suppress(OSError):
            names += [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        if any(str(root) in n for n in names):
            found.append(f"{proc.name}: {names[0].replace(chr(0), ' ')[:200]}")
    return found


# -- the test ------------------------------------------------------------------


def _exercise(run: Run, postgres: EmbeddedPostgres, rng: random.Random) -> threading.Thread:
    """Clients and nemesis until the schedule is done; the monitor keeps running."""
    monitor = _thread(run, "monitor", _monitor, run)
    wait_until(lambda: len(run.history) == PIPELINES, "the monitor's first sample")
    clients = [
        _thread(run, f"client-{n}", _client, run, n, random.Random(rng.random()))
        for n in range(CLIENTS)
    ]
    nemesis = _thread(run, "nemesis", _nemesis, run, postgres, random.Random(rng.random()))
    try:
        nemesis.join()
    finally:
        run.stop_clients.set()
        for thread in clients:
            thread.join(CALL_TIMEOUT * 3)
        # Whatever happened, leave no replica frozen (PostgreSQL is up again: the
        # nemesis restarts it in a `finally`).
        for manager in run.stack.managers:
            if manager is not None:
                manager.send_signal(signal.SIGCONT)
    if run.failures:
        run.stop_monitor.set()
        raise run.failures[0]
    calls = [o for o in run.ops if o.process != "monitor"]
    outcomes = sorted({o.outcome for o in calls})
    print(
        f"{len(calls)} calls: "
        + ", ".join(f"{outcome} {sum(o.outcome == outcome for o in calls)}" for outcome in outcomes)
    )
    return monitor


def _check(run: Run, seed: int, monitor: threading.Thread) -> None:
    stack, checker = run.stack, Checker(run, seed)

    # 4. Every pipeline reaches its desired state once the faults are over.
    def settled() -> bool:
        states = [
            stack.stubs[0].GetPipeline(pb.GetPipelineRequest(name=n), timeout=5) for n in run.names
        ]
        return all(p.deployment_status == p.deployment_desired_status for p in states)

    try:
        wait_until(settled, "every pipeline to reach its desired state", CONVERGE_SECS)
    except AssertionError as exc:
        checker.fail(str(exc), None, time.monotonic())
    time.sleep(3 * SAMPLE_SECS)  # lets the monitor copy the last versions (a pace)
    run.stop_monitor.set()
    monitor.join(WAIT_JOIN)
    table: dict[str, dict[int, str]] = {}
    with psycopg.connect(run.url, autocommit=True) as conn:
        for pipeline_id, version, record in conn.execute(
            "SELECT pipeline_id, refresh_version, record FROM pipeline_history"
        ):
            table.setdefault(pipeline_id, {})[int(version)] = record
        final_leases = {
            str(pid): int(epoch)
            for pid, epoch in conn.execute("SELECT pipeline_id, epoch FROM leases")
        }
    final = {name: stack.get(name) for name in run.names}
    checker.check_versions(final, table)
    checker.check_reads()
    checker.check_writes()
    checker.check_epochs(final_leases)
    checker.check_overlaps()
    checker.check_errors(final)
    if checker.problems:
        pytest.fail(checker.report(), pytrace=False)


def test_random_calls_under_faults_keep_a_consistent_history(
    tmp_path: Path, own_postgres: EmbeddedPostgres
) -> None:
    seed = _seed()
    print(f"STOPCOCK_HISTORY_SEED={seed}")
    rng = random.Random(seed)
    url = own_postgres.new_database()
    env = {"STOPCOCK_DATABASE_URL": url, "STOPCOCK_LEASE_TTL_SECS": TTL}
    root = tmp_path / "stack"
    with running_stack(root, env, replicas=REPLICAS) as stack:
        stack.env["TEST_DATABASE_URL"] = url  # for `lease` (tests/test_replicas.py)
        names = [f"h{i}" for i in range(PIPELINES)]
        run = Run(stack, url, names, {name: stack.create(name)["id"] for name in names})
        monitor = _exercise(run, own_postgres, rng)
        _check(run, seed, monitor)

        # 5. No orphan: force-stopped, no runtime of the stack remains...
        for name in names:
            stack.stubs[0].StopPipeline(pb.StopPipelineRequest(name=name, force=True))
        for name in names:
            stack.wait_status(name, "Stopped")
        wait_until(lambda: not stack.runtime_pids(), "every runtime process to end")
    # ...and once the stack is closed, no process names its directory (bounded poll:
    # a process killed by the close may take a moment to leave /proc).
    leftovers = _proc_names(root)
    deadline = time.monotonic() + WAIT_JOIN
    while leftovers and time.monotonic() < deadline:
        time.sleep(SAMPLE_SECS)
        leftovers = _proc_names(root)
    assert not leftovers, f"processes left behind naming {root}: {leftovers}"
