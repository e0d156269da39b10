"""Scale: many pipelines on one manager, what each costs when started, idle, listed, re-adopted.

One stack of its own (SQLite), measured in this order so that every baseline
is taken before the load it is compared with:

1. flat GET, baseline: REST `GET /v0/pipelines/{name}` with ONE pipeline
   defined, `wrk --latency` (one thread, GET_CONNECTIONS in flight), RUNS runs
   of `duration` seconds each, the median of their p50/p99;
2. `defined` pipelines (1,000 by default) created over native gRPC
   (CreatePipeline, CONCURRENCY calls in flight), until every program has
   compiled (context, not a target). Each has runtime_config
   provisioning_timeout_secs PROVISIONING_TIMEOUT_SECS: with the default
   (20 s, counted from the start request) the last of 500 started together
   on a 2-core machine time out (ProvisioningTimeout) before their turn;
3. bulk start: StartPipeline of N of them (`--scale-pipelines`, 500),
   CONCURRENCY calls in flight (grpc futures from one thread), watched by
   polling ListPipelines(selector=status) over gRPC until all N report
   `deployment_status == Running`. A list of 1,000 costs the manager tens of
   ms, so the watch sleeps WATCH_SLEEP_FACTOR times the last list's duration
   between polls (at least POLL_SECS): it keeps the watch to a tenth or so of
   the manager's time, and the poll period decides nothing, because the time
   is the manager's own: first StartPipeline sent -> the latest
   `deployment_status_since` (Running) of the N (one clock: the manager runs
   on this machine). The poll that saw them all is reported beside it.
   Rate = N / time, target >= START_RATE_TARGET;
4. idle cost: after IDLE_SETTLE_SECS, the CPU time of the manager, Envoy,
   the runtime template and every runtime over `idle_secs`: the sum of the
   first field of /proc/PID/task/*/schedstat (ns on a CPU, every thread),
   before and after, in % of one core; target <= IDLE_TARGET_PCT for all of
   it. Then PSS (/proc/PID/smaps_rollup `Pss:`: shared pages divided among
   their sharers, i.e. what a forked runtime really adds) of every runtime,
   median and max (target <= PSS_TARGET_MIB), of the template, the manager
   and Envoy;
5. list latency: LIST_REQUESTS sequential `GET /v0/pipelines?selector=status`
   through Envoy on one keep-alive connection (all `defined` pipelines, N
   Running), p50/p99, with the CPU of each part meanwhile; target p99 <=
   LIST_P99_TARGET_MS. Then as many ListPipelines(selector=status) over gRPC
   straight to the manager (context: the manager's share of the time);
6. flat GET, loaded: as 1., now with `defined` pipelines and N running;
   target p99 ratio loaded / one-pipeline <= GET_RATIO_TARGET;
7. manager CPU per no-op request (CheckHealth) vs a bare grpc.aio server
   serving the same method, same client, same run, direct and through Envoy
   (bench.request_cost); target ratio <= REQUEST_COST_TARGET;
8. restart re-adoption: kill -9 of the manager with N running, started again
   at once; time from the kill until all N are Running with the deployment
   id they had, the manager's `stopcock_runtime_readoptions_total` counts N
   (its actors found every recorded runtime alive: a restarted manager reads
   Running from its database at once, so the status alone proves nothing),
   and the live runtime processes are exactly the same pids as before the
   kill. Target <= RESTART_TARGET_S;
9. bulk force stop: StopPipeline(force=true) of all N, CONCURRENCY in
   flight; time until all N report Stopped, and until no runtime process is
   left (every pid recorded before has exited, then one /proc scan finds no
   runtime of the stack at all). Stopped is timed like Running in 3. (the
   latest `deployment_status_since`); the processes' exits by this process,
   from a pidfd each (the kernel tells; no load on the manager). Target: both
   <= STOP_TARGET_S.

The manager's file descriptors (open, and its soft RLIMIT_NOFILE) are
recorded with N running: every runtime costs it at least a connection and a
pidfd. The manager raises its soft limit to its hard limit; this process
raises its own too (Envoy and the load generators inherit it).
"""

from __future__ import annotations

import contextlib
import math
import re
import resource
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
from stopcock.v1 import pipeline_service_pb2 as pb

from bench import procs, request_cost
from bench.load import BenchError, parse_wrk
from bench.stats import median, percentile, ratio
from tests.support import PROGRAM, WAIT, Stack

PREFIX = "bench-scale-"
CONCURRENCY = 32  # gRPC calls in flight for the bulk create / start / stop
POLL_SECS = 0.1  # the shortest ListPipelines watch period
WATCH_SLEEP_FACTOR = 10  # the watch sleeps this many times its last list's duration
CALL_TIMEOUT = 30.0  # seconds, one gRPC call
GET_CONNECTIONS = 4  # wrk connections for the flat GET figure
GET_RUNS = 5  # wrk runs per GET figure (the median p50/p99 of them)
LIST_REQUESTS = 200
IDLE_SETTLE_SECS = 2.0  # after the last Running, before the idle window
# runtime_config.provisioning_timeout_secs of every pipeline: the default (20 s)
# counts from the StartPipeline, and the manager spawns ~15 runtimes a second on
# a loaded 2-core machine, so the last of 500 started together would time out.
PROVISIONING_TIMEOUT_SECS = 600

START_RATE_TARGET = 50.0  # pipelines/s, at least
IDLE_TARGET_PCT = 5.0  # % of one core for the whole system, at most
PSS_TARGET_MIB = 5.0  # per runtime, at most
LIST_P99_TARGET_MS = 50.0
GET_RATIO_TARGET = 1.5  # loaded p99 / one-pipeline p99, at most
RESTART_TARGET_S = 5.0
RESTART_BOUND_S_PER_PIPELINE = 0.6  # the restart's wait, at least WAIT
STOP_TARGET_S = 5.0
REQUEST_COST_TARGET = 1.3  # manager / bare grpc.aio server, CPU per no-op request

_READOPTIONS = re.compile(r"^stopcock_runtime_readoptions_total\s+(\S+)$", re.M)


@dataclass(frozen=True, slots=True)
class GetRun:
    """The median figures of GET_RUNS wrk runs of `GET /v0/pipelines/{name}`."""

    defined: int
    running: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    run_p99_ms: list[float]


@dataclass(frozen=True, slots=True)
class RequestCostFigure:
    """bench.request_cost's figures: CPU per CheckHealth, direct gRPC and through Envoy."""

    bare_us: float
    manager_us: float
    ratio: float  # median of the rounds' manager / bare ratios
    envoy_bare_us: float
    envoy_manager_us: float
    envoy_ratio: float


@dataclass(frozen=True, slots=True)
class ScaleResult:
    pipelines: int  # N, started together
    defined: int  # pipelines defined in all
    watch: str  # how Running / Stopped were observed
    nofile_soft: int  # the manager's soft RLIMIT_NOFILE
    manager_fds: int  # its open descriptors with N running
    create_s: float  # `defined` created and compiled (context)
    start_requests_s: float  # the N StartPipeline calls answered
    start_s: float  # first StartPipeline sent -> the last Running since (manager clock)
    start_seen_s: float  # first StartPipeline sent -> the poll that saw all N Running
    start_polls: int
    start_watch_s: float  # time in the watch's ListPipelines calls (its load on the manager)
    idle_window_s: float
    idle_pct: dict[str, float]  # % of one core: manager, Envoy, template, runtimes
    idle_machine_pct: float  # every process on the machine (context)
    idle_bench_pct: float  # this process (it sleeps)
    runtime_pss_mib: list[float]  # every runtime's
    template_pss_mib: float
    manager_pss_mib: float
    envoy_pss_mib: float
    list_ms: list[float]
    list_grpc_ms: list[float]  # the same list over gRPC, straight to the manager
    list_cores: dict[str, float]  # during the REST lists
    list_bytes: int
    get_one: GetRun
    get_loaded: GetRun
    request_cost: RequestCostFigure
    restart_up_s: float  # kill -> the new manager answers CheckHealth
    restart_s: float  # kill -> all re-adopted (see the module doc)
    readoptions: int
    stop_requests_s: float
    stop_s: float  # first StopPipeline sent -> the last Stopped since (manager clock)
    stop_seen_s: float  # first StopPipeline sent -> the poll that saw all N Stopped
    stop_gone_s: float  # first StopPipeline sent -> no runtime process left
    # Cores used on average (CpuWindow) by part, "bench" (this process: the
    # calls and the watch) and "machine" (every process), during the bulk
    # start, the restart (kill -> all re-adopted) and the force stop.
    start_cores: dict[str, float]
    restart_cores: dict[str, float]
    stop_cores: dict[str, float]

    @property
    def start_rate(self) -> float:
        return self.pipelines / self.start_s if self.start_s > 0 else float("nan")

    @property
    def idle_total_pct(self) -> float:
        return sum(self.idle_pct.values())

    @property
    def get_ratio(self) -> float:
        return ratio(self.get_loaded.p99_ms, self.get_one.p99_ms)

    @property
    def stop_worst_s(self) -> float:
        return max(self.stop_s, self.stop_gone_s)


# -- /proc ---------------------------------------------------------------------


def schedstat_ns(pid: int) -> int:
    """Nanoseconds `pid`'s threads have spent on a CPU (schedstat, first field); 0 if gone."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0
    for task in tasks:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


def pss_mib(pid: int) -> float:
    """Proportional set size of `pid` (smaps_rollup `Pss:`), MiB; NaN if unreadable."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return float("nan")
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _nofile_soft(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise BenchError(f"no 'Max open files' in /proc/{pid}/limits")


def raise_nofile() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit, for this process and the stack it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# -- gRPC in bulk ----------------------------------------------------------------


def _bulk(calls: Sequence[Callable[[], grpc.Future[Any]]], what: str, timeout: float) -> float:
    """Runs `calls` (each sends one RPC, returns its future), CONCURRENCY in flight.

    Returns the seconds until every one was answered; any error is a BenchError.
    """
    slots = threading.BoundedSemaphore(CONCURRENCY)
    lock = threading.Lock()
    finished = threading.Event()
    left = [len(calls)]
    errors: list[str] = []

    def done(future: grpc.Future[Any]) -> None:
        try:
            future.result()
        except grpc.RpcError as exc:
            with lock:
                errors.append(f"{exc.code()}: {exc.details()}")
        slots.release()
        with lock:
            left[0] -= 1
            if left[0] == 0:
                finished.set()

    started = time.perf_counter()
    deadline = started + timeout
    for call in calls:
        if not slots.acquire(timeout=max(0.0, deadline - time.perf_counter())):
            raise BenchError(f"scale: {what}: calls not answered within {timeout:.0f}s")
        call().add_done_callback(done)
    if calls and not finished.wait(max(0.0, deadline - time.perf_counter())):
        raise BenchError(f"scale: {what}: {left[0]} calls not answered within {timeout:.0f}s")
    if errors:
        raise BenchError(f"scale: {what}: {len(errors)} calls failed, e.g. {errors[0]}")
    return time.perf_counter() - started


def _list(stack: Stack) -> list[pb.Pipeline]:
    answer = stack.stub.ListPipelines(pb.ListPipelinesRequest(selector="status"), timeout=30)
    return [p for p in answer.pipelines if p.name.startswith(PREFIX)]


@dataclass(frozen=True, slots=True)
class Watched:
    pipelines: list[pb.Pipeline]  # as the last poll saw them
    polls: int
    list_s: float  # seconds in ListPipelines calls


def _watch(
    stack: Stack,
    names: set[str],
    done: Callable[[pb.Pipeline], bool],
    what: str,
    timeout: float,
) -> Watched:
    """Polls ListPipelines until done() holds for every pipeline of `names` (module doc, 3.)."""
    deadline = time.perf_counter() + timeout
    polls = 0
    listing = 0.0
    while True:
        polls += 1
        t = time.perf_counter()
        mine = [p for p in _list(stack) if p.name in names]
        took = time.perf_counter() - t
        listing += took
        failed = [
            p
            for p in mine
            if p.HasField("deployment_error") and p.deployment_error.HasField("struct_value")
        ]
        if failed:
            p = failed[0]
            raise BenchError(
                f"scale: {len(failed)} pipelines failed while waiting for {what}, e.g. "
                f"{p.name}: {p.deployment_status} {p.deployment_error}"
            )
        if len(mine) == len(names) and all(done(p) for p in mine):
            return Watched(mine, polls, listing)
        if time.perf_counter() > deadline:
            ready = sum(1 for p in mine if done(p))
            raise BenchError(
                f"scale: timed out after {timeout:.0f}s waiting for {what}: {ready} of {len(names)}"
            )
        time.sleep(max(POLL_SECS, WATCH_SLEEP_FACTOR * took))


def _since_s(p: pb.Pipeline) -> float:
    return p.deployment_status_since.ToMicroseconds() / 1e6


# -- the measurements -----------------------------------------------------------------


def _get(stack: Stack, name: str, wrk: str, duration: int, *, defined: int, running: int) -> GetRun:
    url = f"http://127.0.0.1:{stack.rest_port}/v0/pipelines/{name}"
    runs = []
    for _ in range(GET_RUNS):
        cmd = [
            wrk,
            "--latency",
            "-t1",
            f"-c{GET_CONNECTIONS}",
            f"-d{duration}s",
            "--timeout",
            "10s",
        ]
        result = subprocess.run(
            [*cmd, url],
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=False,
            start_new_session=True,
        )
        if result.returncode != 0:
            raise BenchError(f"wrk failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        runs.append(parse_wrk(result.stdout))
    return GetRun(
        defined=defined,
        running=running,
        rps=median([r[1] for r in runs]),
        p50_ms=median([r[2] for r in runs]),
        p99_ms=median([r[3] for r in runs]),
        errors=sum(r[4] for r in runs),
        run_p99_ms=[r[3] for r in runs],
    )


def _create(stack: Stack, names: Sequence[str]) -> None:
    def create(name: str) -> Callable[[], grpc.Future[Any]]:
        definition = pb.PipelineDefinition(name=name, program_code=PROGRAM)
        definition.runtime_config.update({"provisioning_timeout_secs": PROVISIONING_TIMEOUT_SECS})
        request = pb.CreatePipelineRequest(pipeline=definition)
        return lambda: stack.stub.CreatePipeline.future(request, timeout=CALL_TIMEOUT)

    _bulk([create(n) for n in names], "CreatePipeline", WAIT + len(names) * 0.1)
    _watch(
        stack,
        set(names),
        lambda p: p.program_status == "Success",
        "every program to compile",
        WAIT + len(names) * 0.1,
    )


PARTS = ("manager", "Envoy", "template", "runtimes")


def _parts(stack: Stack) -> dict[str, list[int]]:
    """The stack's processes by part (PARTS), as they are now."""
    assert stack.manager is not None and stack.envoy is not None
    return {
        "manager": [stack.manager.pid],
        "Envoy": procs.pids_mentioning(str(stack.envoy.config_path)),
        "template": stack.template_pids(),
        "runtimes": stack.runtime_pids(),
    }


class CpuWindow:
    """CPU seconds by part over a window, with this process ("bench") and the machine's.

    A part's pids are taken at both ends: a process started meanwhile counts
    its whole life (a forked runtime starts from zero), one gone at the end
    is lost (its CPU in the window cannot be read any more).
    """

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._before = self._sample(_parts(stack))
        self._wall = time.perf_counter()

    @staticmethod
    def _sample(parts: dict[str, list[int]]) -> dict[str, float]:
        cpu = {k: sum(schedstat_ns(p) for p in pids) / 1e9 for k, pids in parts.items()}
        own = resource.getrusage(resource.RUSAGE_SELF)
        cpu["bench"] = own.ru_utime + own.ru_stime
        cpu["machine"] = procs.machine_busy_seconds()
        return cpu

    def restarted(self, part: str) -> None:
        """`part`'s process was replaced: its new one counts from zero."""
        self._before[part] = 0.0

    def cores(self) -> dict[str, float]:
        """Cores used on average since the window opened, by part, bench and machine."""
        wall = time.perf_counter() - self._wall
        after = self._sample(_parts(self._stack))
        return {k: max(0.0, after[k] - self._before[k]) / wall for k in after}


def _idle(stack: Stack, seconds: float) -> dict[str, float]:
    window = CpuWindow(stack)
    time.sleep(seconds)
    return {k: v * 100 for k, v in window.cores().items()}


def _list_grpc(stack: Stack) -> list[float]:
    times = []
    for _ in range(LIST_REQUESTS):
        t = time.perf_counter()
        stack.stub.ListPipelines(pb.ListPipelinesRequest(selector="status"), timeout=30)
        times.append((time.perf_counter() - t) * 1000)
    return times


def _list_latency(stack: Stack) -> tuple[list[float], int]:
    times = []
    size = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.rest_port}", timeout=30) as client:
        for _ in range(LIST_REQUESTS):
            t = time.perf_counter()
            r = client.get("/v0/pipelines", params={"selector": "status"})
            times.append((time.perf_counter() - t) * 1000)
            if r.status_code != 200:
                raise BenchError(f"scale: GET /v0/pipelines: {r.status_code} {r.text[:300]}")
            size = len(r.content)
    return times, size


def _request_cost(stack: Stack, progress: Callable[[str], None]) -> RequestCostFigure:
    """Manager CPU per no-op request beside a bare grpc.aio server (bench.request_cost),
    direct and through Envoy, with N running."""
    assert stack.manager is not None
    progress("scale: CPU per no-op request, manager beside a bare grpc.aio server")
    cost = request_cost.measure(
        manager_port=stack.grpc_port,
        manager_pid=stack.manager.pid,
        envoy_port=stack.rest_port,
        progress=progress,
    )
    envoy = cost.envoy
    return RequestCostFigure(
        bare_us=float(cost.bare_us),
        manager_us=float(cost.manager_us),
        ratio=float(cost.ratio),
        envoy_bare_us=float(envoy.bare_us) if envoy else math.nan,
        envoy_manager_us=float(envoy.manager_us) if envoy else math.nan,
        envoy_ratio=float(envoy.ratio) if envoy else math.nan,
    )


def _readoptions(stack: Stack) -> int:
    text = httpx.get(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10).text
    found = _READOPTIONS.search(text)
    return int(float(found.group(1))) if found else 0


def _runtime_pid(stack: Stack, pipeline_id: str) -> int:
    info = (stack.data_dir / "pipelines" / pipeline_id / "run" / "runtime.json").read_text()
    pid = re.search(r'"pid"\s*:\s*(\d+)', info)
    if pid is None:
        raise BenchError(f"scale: no pid in the runtime.json of {pipeline_id}")
    return int(pid.group(1))


def _answering(stack: Stack) -> bool:
    try:
        health = stack.stub.CheckHealth(pb.CheckHealthRequest(), timeout=1)
    except grpc.RpcError:
        return False
    return health.status == "healthy"


def _readoptions_now(stack: Stack) -> int | None:
    with contextlib.suppress(httpx.HTTPError):
        return _readoptions(stack)
    return None


def _restart(
    stack: Stack, names: set[str], window: CpuWindow, progress: Callable[[str], None]
) -> tuple[float, float, int]:
    """kill -9 and restart of the manager: (kill -> answering, kill -> all re-adopted, count).

    Bounded by RESTART_BOUND_S_PER_PIPELINE a pipeline (at least WAIT): far over
    the target, so that a slow re-adoption is measured rather than cut short.
    """
    running = {p.name: p for p in _list(stack) if p.name in names}
    deployments = {n: p.deployment_id.string_value for n, p in running.items()}
    recorded = {n: _runtime_pid(stack, p.id) for n, p in running.items()}
    live = set(stack.runtime_pids())
    if set(recorded.values()) != live:
        raise BenchError(
            f"scale: before the restart, {len(live)} runtime processes live, "
            f"{len(set(recorded.values()))} recorded"
        )
    killed = time.perf_counter()
    deadline = killed + max(WAIT, len(names) * RESTART_BOUND_S_PER_PIPELINE)
    stack.kill_manager()
    with contextlib.suppress(AssertionError):  # not answering within WAIT: waited for below
        stack.start_manager()
    window.restarted("manager")
    shown = time.perf_counter()
    while not _answering(stack):
        if time.perf_counter() > deadline:
            raise BenchError(
                f"scale: restart: the manager did not answer within {deadline - killed:.0f}s "
                f"({_readoptions_now(stack)} re-adoptions counted)"
            )
        if time.perf_counter() - shown > 5:
            shown = time.perf_counter()
            progress(
                f"scale: restart: not answering after {shown - killed:.0f} s; "
                f"{_readoptions_now(stack)} re-adoptions counted"
            )
        time.sleep(POLL_SECS)
    up = time.perf_counter() - killed
    count = 0
    while True:
        count = _readoptions(stack)
        if count >= len(names):
            _watch(
                stack,
                names,
                lambda p: (
                    p.deployment_status == "Running"
                    and p.deployment_id.string_value == deployments[p.name]
                ),
                "every pipeline Running with its deployment id",
                max(0.0, deadline - time.perf_counter()),
            )
            if set(stack.runtime_pids()) == live:
                break
        if time.perf_counter() > deadline:
            raise BenchError(
                f"scale: restart: {count} of {len(names)} runtimes re-adopted after "
                f"{deadline - killed:.0f}s"
            )
        time.sleep(POLL_SECS)
    after = time.perf_counter() - killed
    moved = [n for n in names if _runtime_pid(stack, running[n].id) != recorded[n]]
    if moved:
        raise BenchError(f"scale: restart: {len(moved)} runtimes changed pid, e.g. {moved[0]}")
    return up, after, count


def _force_stop(stack: Stack, names: Iterable[str]) -> tuple[float, float, float, float]:
    """(requests answered, last Stopped since by the manager's clock, all Stopped seen, no
    runtime left), seconds since the first request."""
    wanted = set(names)
    pids = stack.runtime_pids()
    timeout = WAIT + len(wanted) * 0.05

    def stop(name: str) -> Callable[[], grpc.Future[Any]]:
        request = pb.StopPipelineRequest(name=name, force=True)
        return lambda: stack.stub.StopPipeline.future(request, timeout=CALL_TIMEOUT)

    wall0, started = time.time(), time.perf_counter()
    answered = _bulk([stop(n) for n in sorted(wanted)], "StopPipeline(force)", timeout)
    watched = _watch(
        stack, wanted, lambda p: p.deployment_status == "Stopped", "every pipeline Stopped", timeout
    )
    seen = time.perf_counter() - started
    stopped = max(_since_s(p) for p in watched.pipelines) - wall0
    left = procs.wait_gone(pids, max(0.0, started + timeout - time.perf_counter()))
    if left:
        raise BenchError(f"scale: force stop: {len(left)} runtime processes left, e.g. {left[:5]}")
    gone = time.perf_counter() - started
    if left := stack.runtime_pids():
        raise BenchError(f"scale: force stop: runtime processes left: {left[:10]}")
    return answered, stopped, seen, gone


@dataclass(frozen=True, slots=True)
class BulkStart:
    requests_s: float  # every StartPipeline answered
    running_s: float  # the last Running since (manager clock)
    seen_s: float  # the poll that saw all Running
    watched: Watched
    cores: dict[str, float]


def _bulk_start(stack: Stack, names: set[str]) -> BulkStart:
    """StartPipeline of `names` together; times in seconds since the first call."""
    pipelines = len(names)

    def start(name: str) -> Callable[[], grpc.Future[Any]]:
        request = pb.StartPipelineRequest(name=name, initial="running")
        return lambda: stack.stub.StartPipeline.future(request, timeout=CALL_TIMEOUT)

    timeout = WAIT + pipelines * 0.2
    window = CpuWindow(stack)
    wall0, t0 = time.time(), time.perf_counter()
    start_requests_s = _bulk([start(n) for n in sorted(names)], "StartPipeline", timeout)
    watched = _watch(
        stack,
        names,
        lambda p: p.deployment_status == "Running",
        "every started pipeline to be Running",
        max(0.0, t0 + timeout - time.perf_counter()),
    )
    seen_s = time.perf_counter() - t0
    cores = window.cores()
    running_s = max(_since_s(p) for p in watched.pipelines) - wall0
    return BulkStart(start_requests_s, running_s, seen_s, watched, cores)


def run(
    stack: Stack,
    *,
    pipelines: int,
    defined: int,
    idle_secs: float,
    duration: int,
    wrk: str,
    progress: Callable[[str], None],
) -> ScaleResult:
    """Every measurement of the module doc on `stack` (fresh: no pipeline defined yet)."""
    assert stack.manager is not None and stack.envoy is not None
    names = [f"{PREFIX}{i:05d}" for i in range(defined)]
    started_names = set(names[:pipelines])

    progress("scale: GET with one pipeline defined")
    _create(stack, names[:1])
    get_one = _get(stack, names[0], wrk, duration, defined=1, running=0)

    progress(f"scale: creating {defined - 1} more pipelines over gRPC")
    t = time.perf_counter()
    _create(stack, names[1:])
    create_s = time.perf_counter() - t

    progress(f"scale: starting {pipelines} pipelines together")

    bulk = _bulk_start(stack, started_names)
    progress(
        f"scale: {pipelines} Running after {bulk.running_s:.1f} s "
        f"({pipelines / bulk.running_s:.0f}/s; seen after {bulk.seen_s:.1f} s)"
    )

    manager = stack.manager.pid
    nofile = _nofile_soft(manager)
    fds = len(list(Path(f"/proc/{manager}/fd").iterdir()))

    time.sleep(IDLE_SETTLE_SECS)
    progress(f"scale: idle CPU over {idle_secs:g} s")
    idle = _idle(stack, idle_secs)
    machine_pct, bench_pct = idle.pop("machine"), idle.pop("bench")
    runtimes = stack.runtime_pids()
    if len(runtimes) != pipelines:
        raise BenchError(f"scale: {len(runtimes)} runtime processes for {pipelines} Running")
    pss = [pss_mib(p) for p in runtimes]
    templates = stack.template_pids()
    envoy = procs.pids_mentioning(str(stack.envoy.config_path))
    template_pss = sum(pss_mib(p) for p in templates)
    manager_pss, envoy_pss = pss_mib(manager), sum(pss_mib(p) for p in envoy)

    progress(f"scale: {LIST_REQUESTS} x GET /v0/pipelines?selector=status")
    window = CpuWindow(stack)
    list_ms, list_bytes = _list_latency(stack)
    list_cores = window.cores()
    list_grpc_ms = _list_grpc(stack)

    progress(f"scale: GET with {defined} defined, {pipelines} running")
    get_loaded = _get(stack, names[0], wrk, duration, defined=defined, running=pipelines)

    cost = _request_cost(stack, progress)

    progress(f"scale: kill -9 of the manager with {pipelines} running, and a restart")
    window = CpuWindow(stack)
    up_s, restart_s, readoptions = _restart(stack, started_names, window, progress)
    restart_cores = window.cores()
    progress(f"scale: re-adopted after {restart_s:.2f} s")

    progress(f"scale: force stop of {pipelines} pipelines together")
    window = CpuWindow(stack)
    stop_requests_s, stop_s, stop_seen_s, gone_s = _force_stop(stack, started_names)
    stop_cores = window.cores()
    del stop_cores["runtimes"]  # gone: their CPU in the window cannot be read

    return ScaleResult(
        pipelines=pipelines,
        defined=defined,
        watch=(
            "gRPC ListPipelines(selector=status), polled with a sleep of "
            f"{WATCH_SLEEP_FACTOR}x the last list's duration (>= {POLL_SECS * 1000:.0f} ms); "
            "times from the manager's deployment_status_since"
        ),
        nofile_soft=nofile,
        manager_fds=fds,
        create_s=create_s,
        start_requests_s=bulk.requests_s,
        start_s=bulk.running_s,
        start_seen_s=bulk.seen_s,
        start_polls=bulk.watched.polls,
        start_watch_s=bulk.watched.list_s,
        idle_window_s=idle_secs,
        idle_pct=idle,
        idle_machine_pct=machine_pct,
        idle_bench_pct=bench_pct,
        runtime_pss_mib=pss,
        template_pss_mib=template_pss,
        manager_pss_mib=manager_pss,
        envoy_pss_mib=envoy_pss,
        start_cores=bulk.cores,
        restart_cores=restart_cores,
        stop_cores=stop_cores,
        list_ms=list_ms,
        list_bytes=list_bytes,
        list_grpc_ms=list_grpc_ms,
        list_cores=list_cores,
        get_one=get_one,
        get_loaded=get_loaded,
        request_cost=cost,
        restart_up_s=up_s,
        restart_s=restart_s,
        readoptions=readoptions,
        stop_requests_s=stop_requests_s,
        stop_s=stop_s,
        stop_seen_s=stop_seen_s,
        stop_gone_s=gone_s,
    )


def list_latency(result: ScaleResult) -> tuple[float, float]:
    return percentile(result.list_ms, 50), percentile(result.list_ms, 99)


def runtime_pss(result: ScaleResult) -> tuple[float, float]:
    values = [v for v in result.runtime_pss_mib if not math.isnan(v)]  # a runtime gone meanwhile
    return median(values), max(values, default=float("nan"))


def nofile_needed(pipelines: int) -> int:
    """A rough floor of the manager's descriptors with `pipelines` running (two each)."""
    return 2 * pipelines + 64
