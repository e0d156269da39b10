"""Throughput and latency of GetPipeline against a no-op baseline, side by side.

What is measured: requests per second and p50/p99 latency with a fixed
number of requests in flight (50 by default) for a fixed duration, for

* REST through Envoy: `GET /v0/pipelines/{name}` against `GET /healthz`,
  loaded by `wrk --latency` (its own figures are parsed);
* native gRPC on the manager port: `GetPipeline` against `CheckHealth`,
  loaded by `bench.grpc_client` in a separate process.

Why a no-op baseline: the machine is shared and noisy (tests, other
builds), and the absolute rate of a Python server depends on the machine.
`CheckHealth` does no work but crosses the same Envoy, transcoder, Lua
filter, HTTP/2 hop, grpc.aio server and servicer dispatch, so the ratio
GetPipeline / no-op isolates what GetPipeline itself costs. Baseline and
subject runs alternate (A B, B A, A B, ...: the order flips each round so a
drift in machine load hits both equally) and the medians are compared. A
short warm-up run of each is discarded first.

Each run also records the CPU used by the manager, Envoy and the load
generator (in cores), which shows which process set the pace.
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from bench import procs
from bench.stats import median, ratio

REPO = Path(__file__).resolve().parents[1]


class BenchError(RuntimeError):
    """The benchmark itself failed (as opposed to a target being missed)."""


@dataclass(frozen=True, slots=True)
class LoadRun:
    """One fixed-duration run of one subject."""

    requests: int
    errors: int
    error_detail: str
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    manager_cores: float
    envoy_cores: float
    client_cores: float
    machine_cores: float  # every process on the machine, ours included


@dataclass(frozen=True, slots=True)
class Subject:
    """Something to load: a label and a function running it for N seconds."""

    label: str
    run: Callable[[int], LoadRun]


@dataclass(slots=True)
class Comparison:
    """Interleaved runs of a subject and of its no-op baseline."""

    title: str
    baseline_label: str
    subject_label: str
    baseline: list[LoadRun] = field(default_factory=list)
    subject: list[LoadRun] = field(default_factory=list)

    @staticmethod
    def med(runs: list[LoadRun], attr: str) -> float:
        return median([float(getattr(r, attr)) for r in runs])

    def rps_ratio(self) -> float:
        """Median subject throughput / median baseline throughput."""
        return ratio(self.med(self.subject, "rps"), self.med(self.baseline, "rps"))

    def pair_ratios(self) -> list[float]:
        """Throughput ratio of each round (adjacent runs): the spread shows the noise."""
        return [ratio(s.rps, b.rps) for s, b in zip(self.subject, self.baseline, strict=True)]


class CpuSample(NamedTuple):
    """CPU seconds used so far by the manager, Envoy and the machine; wall time."""

    manager: float
    envoy: float
    machine: float
    wall: float


class CpuProbe:
    """Samples the CPU time of the manager and of Envoy's process(es)."""

    def __init__(self, manager_pid: int, envoy_pids: list[int]) -> None:
        self.manager_pid = manager_pid
        self.envoy_pids = envoy_pids

    def sample(self) -> CpuSample:
        return CpuSample(
            manager=procs.cpu_seconds(self.manager_pid),
            envoy=sum(procs.cpu_seconds(pid) for pid in self.envoy_pids),
            machine=procs.machine_busy_seconds(),
            wall=time.perf_counter(),
        )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- REST: wrk -------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}  # -> milliseconds


def _ms(number: str, unit: str) -> float:
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> tuple[int, float, float, float, int, str]:
    """(requests, requests/s, p50 ms, p99 ms, errors, error detail) from `wrk --latency`."""
    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)\b", output, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    p50 = re.search(r"^\s*50%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    if not (done and rps and p50 and p99):
        raise BenchError(f"could not parse wrk's output:\n{output}")
    details = []
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        details.append(f"non-2xx {non2xx.group(1)}")
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock:
        kinds = ("connect", "read", "write", "timeout")
        details += [f"{k} {n}" for k, n in zip(kinds, sock.groups(), strict=True) if n != "0"]
    errors = sum(int(d.split()[-1]) for d in details)
    return (
        int(done.group(1)),
        float(rps.group(1)),
        _ms(*p50.groups()),
        _ms(*p99.groups()),
        errors,
        ", ".join(details),
    )


def wrk_subject(label: str, url: str, connections: int, probe: CpuProbe, wrk: str) -> Subject:
    """`wrk` with one thread (plenty for a few thousand requests/s, and it
    leaves the second core to the server side) and `connections` in flight."""

    def run(duration: int) -> LoadRun:
        cmd = [wrk, "--latency", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s"]
        before = probe.sample()
        c0 = _children_cpu()
        result = subprocess.run(
            [*cmd, url],
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=False,
            start_new_session=True,  # Ctrl-C reaches us only; run() kills wrk on any exception
        )
        after = probe.sample()
        if result.returncode != 0:
            raise BenchError(f"wrk failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        requests, rps, p50, p99, errors, detail = parse_wrk(result.stdout)
        wall = after.wall - before.wall
        return LoadRun(
            requests=requests,
            errors=errors,
            error_detail=detail,
            seconds=wall,
            rps=rps,
            p50_ms=p50,
            p99_ms=p99,
            manager_cores=(after.manager - before.manager) / wall,
            envoy_cores=(after.envoy - before.envoy) / wall,
            client_cores=(_children_cpu() - c0) / wall,
            machine_cores=(after.machine - before.machine) / wall,
        )

    return Subject(label, run)


# -- gRPC: bench.grpc_client in its own process ------------------------------


def grpc_subject(
    label: str, *, port: int, method: str, name: str, concurrency: int, probe: CpuProbe
) -> Subject:
    """`bench.grpc_client` against the manager's port (see that module)."""

    def run(duration: int) -> LoadRun:
        cmd = [sys.executable, "-m", "bench.grpc_client", f"--port={port}", f"--method={method}"]
        cmd += [f"--name={name}", f"--concurrency={concurrency}", f"--duration={duration}"]
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C reaches us only; the finally below kills it
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            ready = proc.stdout.readline().strip()
            if ready != "ready":
                raise BenchError(f"grpc load client did not start ({method}): {ready!r}")
            before = probe.sample()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            after = probe.sample()
            if proc.wait(timeout=30) != 0 or not line:
                raise BenchError(f"grpc load client failed ({method}), exit {proc.returncode}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out = json.loads(line)
        errors: dict[str, int] = out["errors"]
        wall = float(out["seconds"])  # the load window, as the client timed it
        window = after.wall - before.wall  # the sampling window: a little wider
        return LoadRun(
            requests=int(out["requests"]),
            errors=sum(errors.values()),
            error_detail=", ".join(f"{code} {n}" for code, n in sorted(errors.items())),
            seconds=wall,
            rps=int(out["requests"]) / wall,
            p50_ms=float(out["p50_ms"]),
            p99_ms=float(out["p99_ms"]),
            manager_cores=(after.manager - before.manager) / window,
            envoy_cores=(after.envoy - before.envoy) / window,
            client_cores=float(out["cpu_seconds"]) / wall,
            machine_cores=(after.machine - before.machine) / window,
        )

    return Subject(label, run)


# -- interleaving -------------------------------------------------------------


def compare(
    title: str,
    baseline: Subject,
    subject: Subject,
    *,
    rounds: int,
    duration: int,
    warmup: int,
    progress: Callable[[str], None],
) -> Comparison:
    """Warm both up, then `rounds` rounds of one run each, order flipped every round."""
    for s in (baseline, subject):
        s.run(warmup)
    result = Comparison(title, baseline.label, subject.label)
    for i in range(rounds):
        order = [(baseline, result.baseline), (subject, result.subject)]
        for s, runs in order if i % 2 == 0 else reversed(order):
            run = s.run(duration)
            runs.append(run)
            errs = f", {run.errors} errors" if run.errors else ""
            progress(f"{title} {s.label} round {i + 1}/{rounds}: {run.rps:.0f} req/s{errs}")
    return result
