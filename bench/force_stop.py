"""Force stop latency: from `POST .../stop?force=true` to the pipeline Stopped.

Each cycle starts the pipeline (POST start, then polls the REST GET until
`deployment_status` is Running), notes the runtime process, takes the
client's wall clock `time.time()` right before `POST
/v0/pipelines/{name}/stop?force=true`, then polls `GET ...?selector=status`
about every millisecond until `deployment_status` is Stopped.

Two latencies per stop:

* manager: the Stopped state's `deployment_status_since` (written by the
  manager, same machine and clock) minus the client's time before the POST.
  This is the figure the targets apply to: it does not include the poll
  interval, nor the time the poll that saw Stopped took to come back.
* client-observed: wall time until a GET showed Stopped (perf_counter), for
  comparison; the difference is the cost of observing.

Each cycle also checks that the runtime process is gone once Stopped is
observed (a force stop releases resources "at once") and that the stop set
no deployment error. The start latency (client-observed) is kept for context.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bench import procs
from bench.load import BenchError
from bench.stats import percentile

_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z")


def parse_rfc3339(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC time (`...Z`), sub-µs kept."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise BenchError(f"not an RFC 3339 UTC time: {text!r}")
    whole = calendar.timegm((*(int(g) for g in m.groups()[:6]), 0, 0, 0))
    return whole + int((m.group(7) or "0").ljust(9, "0")) / 1e9


@dataclass(frozen=True, slots=True)
class StopCycle:
    """One start + force stop."""

    manager_ms: float
    client_ms: float
    start_ms: float
    runtime_alive_when_stopped: bool
    deployment_error: str | None


@dataclass(frozen=True, slots=True)
class Latency:
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Latency:
        return cls(percentile(values, 50), percentile(values, 99), max(values))


def _status(rest: httpx.Client, name: str) -> dict[str, Any]:
    r = rest.get(f"/v0/pipelines/{name}", params={"selector": "status"})
    if r.status_code != 200:
        raise BenchError(f"GET {name}: {r.status_code} {r.text}")
    body: dict[str, Any] = r.json()
    return body


def _wait(
    rest: httpx.Client, name: str, status: str, poll: float, timeout: float
) -> dict[str, Any]:
    deadline = time.perf_counter() + timeout
    while (p := _status(rest, name))["deployment_status"] != status:
        if time.perf_counter() > deadline:
            raise BenchError(f"{name} not {status} after {timeout}s: {p['deployment_status']}")
        time.sleep(poll)
    return p


def _post(rest: httpx.Client, path: str, params: dict[str, str]) -> None:
    r = rest.post(path, params=params)
    if r.status_code != 202:
        raise BenchError(f"POST {path} {params}: {r.status_code} {r.text}")


def cycle(
    rest: httpx.Client,
    name: str,
    find_runtimes: Callable[[], list[int]],
    *,
    poll: float = 0.001,
    timeout: float = 30.0,
) -> StopCycle:
    """Start `name`, then force-stop it and time the stop (see the module doc)."""
    t = time.perf_counter()
    _post(rest, f"/v0/pipelines/{name}/start", {})
    _wait(rest, name, "Running", 0.005, timeout)
    start_ms = (time.perf_counter() - t) * 1000
    runtimes = find_runtimes()  # outside the timed window: it scans /proc

    before_wall = time.time()
    before = time.perf_counter()
    _post(rest, f"/v0/pipelines/{name}/stop", {"force": "true"})
    p = _wait(rest, name, "Stopped", poll, timeout)
    client_ms = (time.perf_counter() - before) * 1000
    manager_ms = (parse_rfc3339(p["deployment_status_since"]) - before_wall) * 1000
    error = p.get("deployment_error")
    return StopCycle(
        manager_ms=manager_ms,
        client_ms=client_ms,
        start_ms=start_ms,
        runtime_alive_when_stopped=any(procs.alive(pid) for pid in runtimes),
        deployment_error=None if error is None else str(error),
    )


def run(
    rest: httpx.Client,
    name: str,
    find_runtimes: Callable[[], list[int]],
    cycles: int,
    progress: Callable[[str], None],
) -> list[StopCycle]:
    """`cycles` start + force stop cycles of the pipeline `name`."""
    done: list[StopCycle] = []
    for i in range(cycles):
        done.append(cycle(rest, name, find_runtimes))
        if (i + 1) % 10 == 0 or i + 1 == cycles:
            recent = [c.manager_ms for c in done[-10:]]
            progress(f"force stop {i + 1}/{cycles}: last 10 {min(recent):.1f}-{max(recent):.1f} ms")
    return done
