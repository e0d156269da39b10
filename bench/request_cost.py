"""The manager's CPU per no-op request, beside a bare grpc.aio server's.

The question (the "lighter manager" goal): how much CPU does the manager
spend on a request that does nothing, compared with what grpc.aio itself
costs? The no-op is `CheckHealth`. The yardstick is bench.bare_server: the
same generated service, server options and event loop, with a servicer
that answers CheckHealth and nothing else around it (no interceptor,
logging context or metrics).

How: the same load client (bench.grpc_client, its own process, the same
number of calls in flight) loads each server for a fixed time, and the
server's CPU over that window is read from /proc/PID/task/*/schedstat (the
first field: nanoseconds on a CPU, summed over the threads, so grpc's
polling threads count; precise, unlike the clock ticks of /proc/PID/stat),
then divided by the requests the client completed. Runs alternate between
the servers, the order flipping every round (A B, B A, ...), so a drift in
the machine's load hits both alike; a short warm-up run of each is
discarded first. The CPU per request of each server is the median over
rounds; the ratio is the median of the ratios within each round (two
adjacent runs, which share the machine's conditions best), and
`round_ratios` lists them, which shows the noise.

Two paths, both loaded by the same client in the same run:

* direct: gRPC to the manager's port and to the bare server's. The
  cleanest comparison of server CPU.
* via Envoy (when the caller names the manager's Envoy port): native gRPC
  through the manager's Envoy, and through a second Envoy started here
  from the same template in front of the bare server, so both servers see
  the same upstream traffic (Envoy's connection, its `x-request-id` and
  other added headers). Only the servers' CPU is compared, not Envoy's.

CPU the server spends while idle counts too (the window is the load's
only, a few seconds; an idle manager uses next to none).

`measure(...)` is the API (bench's "scale" section uses it);
`python -m bench.request_cost` starts a private stack and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from stopcock.sidecar import EnvoySidecar

from bench.load import BenchError
from bench.stats import median, ratio

REPO = Path(__file__).resolve().parents[1]
METHOD = "CheckHealth"
CONCURRENCY = 8  # calls in flight: enough to keep a server busy, few enough to queue little
WARMUP_SECONDS = 1.0
TARGET_RATIO = 1.3  # the goal: manager CPU per no-op request <= 1.3 x the bare server's


def schedstat_ns(pid: int) -> int:
    """Nanoseconds `pid` has spent on a CPU: its live threads' schedstat, summed.

    A thread that exits takes its time with it; grpc's threads live as long
    as the server, so a load window loses nothing measurable.
    """
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended between the listing and the read
    return total


@dataclass(frozen=True, slots=True)
class Run:
    """One load run of one server: requests completed, the server's CPU meanwhile."""

    requests: int
    cpu_ns: int

    @property
    def us_per_request(self) -> float:
        return self.cpu_ns / 1000 / self.requests if self.requests else float("nan")


@dataclass(frozen=True, slots=True)
class PathCost:
    """Per-request server CPU over one path (direct gRPC, or via Envoy)."""

    path: str  # "grpc" or "envoy"
    bare_us: float  # the bare server's CPU per request, µs (median over rounds)
    manager_us: float  # the manager's, µs
    ratio: float  # manager / bare: the median of round_ratios
    bare_requests: int  # requests counted, over every round
    manager_requests: int
    round_ratios: tuple[float, ...]  # manager / bare within each round

    @property
    def met(self) -> bool:
        return self.ratio <= TARGET_RATIO


@dataclass(frozen=True, slots=True)
class RequestCost:
    """The direct path's figures (also as the top-level fields), and the Envoy path's."""

    direct: PathCost
    envoy: PathCost | None  # None when no Envoy port was given
    rounds: int
    seconds: float  # per run
    concurrency: int

    @property
    def bare_us(self) -> float:
        return self.direct.bare_us

    @property
    def manager_us(self) -> float:
        return self.direct.manager_us

    @property
    def ratio(self) -> float:
        return self.direct.ratio

    @property
    def requests(self) -> int:
        return self.direct.bare_requests + self.direct.manager_requests

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# -- one run -------------------------------------------------------------------


def load(port: int, pid: int, seconds: float, concurrency: int) -> Run:
    """bench.grpc_client's CheckHealth load on `port`; the CPU of `pid` over its window."""
    cmd = [sys.executable, "-m", "bench.grpc_client", f"--port={port}", f"--method={METHOD}"]
    cmd += [f"--concurrency={concurrency}", f"--duration={seconds}"]
    # The with closes the pipes; the finally kills the client on any exception.
    with subprocess.Popen(
        cmd,
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ctrl-C reaches our process only
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            if (ready := proc.stdout.readline().strip()) != "ready":
                raise BenchError(f"the load client did not start against port {port}: {ready!r}")
            before = schedstat_ns(pid)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            after = schedstat_ns(pid)
            if proc.wait(timeout=30) != 0 or not line:
                raise BenchError(f"the load client failed against port {port}: {proc.returncode}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out = json.loads(line)
    if out["errors"]:
        raise BenchError(f"CheckHealth failed against port {port}: {out['errors']}")
    return Run(requests=int(out["requests"]), cpu_ns=after - before)


# -- the bare server and its Envoy ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    """A server under test: where the client connects, whose CPU is read."""

    port: int
    pid: int


@contextmanager
def bare_server() -> Iterator[Server]:
    """bench.bare_server in its own process, on a free port; stopped on exit."""
    with subprocess.Popen(
        [sys.executable, "-m", "bench.bare_server", "--port=0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        assert proc.stdout is not None
        try:
            line = proc.stdout.readline().split()
            if len(line) != 2 or line[0] != "port":
                raise BenchError(f"the bare server did not start: {line!r}")
            yield Server(port=int(line[1]), pid=proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def envoy_in_front(upstream: int, rest_port: int) -> Iterator[int]:
    """An Envoy of Stopcock's own config, with `upstream` as its manager; its port."""
    with tempfile.TemporaryDirectory(prefix="stopcock-request-cost-") as tmp:
        envoy = EnvoySidecar(
            workdir=Path(tmp), rest_port=rest_port, upstreams=[("127.0.0.1", upstream)]
        )
        try:
            envoy.start()
            envoy.wait_ready(30.0)
            yield rest_port
        finally:
            envoy.stop()


# -- the comparison ---------------------------------------------------------------


def _path_cost(path: str, bare: list[Run], manager: list[Run]) -> PathCost:
    # Each round's two runs are adjacent in time, so their ratio cancels most
    # of the machine's drift; the median of those ratios is the figure. (The
    # ratio of the two medians is close, but pairs runs far apart in time.)
    rounds = tuple(
        ratio(m.us_per_request, b.us_per_request) for b, m in zip(bare, manager, strict=True)
    )
    return PathCost(
        path=path,
        bare_us=median([r.us_per_request for r in bare]),
        manager_us=median([r.us_per_request for r in manager]),
        ratio=median(rounds),
        bare_requests=sum(r.requests for r in bare),
        manager_requests=sum(r.requests for r in manager),
        round_ratios=rounds,
    )


def measure(
    manager_port: int,
    manager_pid: int,
    rounds: int = 6,
    seconds: float = 3.0,
    *,
    envoy_port: int | None = None,
    bare_envoy_port: int | None = None,
    concurrency: int = CONCURRENCY,
    warmup: float = WARMUP_SECONDS,
    progress: Callable[[str], None] = lambda _: None,
) -> RequestCost:
    """The manager's CPU per CheckHealth beside a bare grpc.aio server's.

    `manager_port` is the manager's gRPC port, `manager_pid` its process.
    With `envoy_port` (the manager's Envoy), the Envoy path is measured too,
    the bare server behind an Envoy of its own on `bare_envoy_port` (any
    free port when None). Runs `rounds` rounds of `seconds` per server and
    path, after one warm-up run of `warmup` seconds of each.
    """
    bare_envoy: int | None = None
    if envoy_port is not None:
        # tests.support's ports lie outside the range the kernel hands out for port 0.
        from tests.support import free_port

        bare_envoy = bare_envoy_port if bare_envoy_port is not None else free_port()
    manager = Server(manager_port, manager_pid)
    with bare_server() as bare:
        subjects: list[tuple[str, Server, Server]] = [("grpc", bare, manager)]
        with _maybe_envoy(bare, bare_envoy) as via:
            if via is not None and envoy_port is not None:
                subjects.append(("envoy", Server(via, bare.pid), Server(envoy_port, manager_pid)))
            runs: dict[tuple[str, str], list[Run]] = {}
            order = [
                (path, role, server)
                for path, b, m in subjects
                for role, server in (("bare", b), ("manager", m))
            ]
            for path, role, server in order:
                load(server.port, server.pid, warmup, concurrency)
                runs[path, role] = []
            for i in range(rounds):
                # A B C D, then D C B A: each server runs as often early as late.
                for path, role, server in order if i % 2 == 0 else reversed(order):
                    run = load(server.port, server.pid, seconds, concurrency)
                    runs[path, role].append(run)
                    progress(
                        f"request cost {path} {role} round {i + 1}/{rounds}: "
                        f"{run.us_per_request:.0f} µs/request over {run.requests} requests"
                    )
    costs = {
        path: _path_cost(path, runs[path, "bare"], runs[path, "manager"]) for path, *_ in subjects
    }
    return RequestCost(
        direct=costs["grpc"],
        envoy=costs.get("envoy"),
        rounds=rounds,
        seconds=seconds,
        concurrency=concurrency,
    )


@contextmanager
def _maybe_envoy(bare: Server, port: int | None) -> Iterator[int | None]:
    if port is None:
        yield None
        return
    with envoy_in_front(bare.port, port) as via:
        yield via


# -- standalone ---------------------------------------------------------------------


def render(cost: RequestCost) -> str:
    lines = [
        f"CheckHealth server CPU per request ({cost.rounds} rounds x {cost.seconds:g} s, "
        f"{cost.concurrency} in flight; target manager/bare <= {TARGET_RATIO})"
    ]
    for p in (cost.direct, cost.envoy):
        if p is None:
            continue
        spread = ", ".join(f"{r:.2f}" for r in p.round_ratios)
        lines.append(
            f"  {p.path:5}  bare {p.bare_us:7.1f} µs  manager {p.manager_us:7.1f} µs  "
            f"ratio {p.ratio:.2f} ({'met' if p.met else 'NOT met'})  "
            f"requests {p.bare_requests}/{p.manager_requests}  rounds [{spread}]"
        )
    return "\n".join(lines)


def main() -> int:
    # The stack the tests and `python -m bench` start: a manager process and its Envoy.
    from tests.support import Stack

    parser = argparse.ArgumentParser(prog="python -m bench.request_cost")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--no-envoy", action="store_true", help="direct gRPC only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    def progress(message: str) -> None:
        print(f"[request-cost] {message}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="stopcock-request-cost-") as tmp:
        stack = Stack(Path(tmp))
        try:
            stack.start_manager()
            if not args.no_envoy:
                stack.start_envoy()
            assert stack.manager is not None
            cost = measure(
                stack.grpc_port,
                stack.manager.pid,
                args.rounds,
                args.seconds,
                envoy_port=None if args.no_envoy else stack.rest_port,
                concurrency=args.concurrency,
                progress=progress,
            )
        finally:
            stack.close()
    print(render(cost))
    if args.json:
        args.json.write_text(json.dumps(cost.as_dict(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
