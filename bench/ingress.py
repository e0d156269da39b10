"""Ingress throughput against json.loads + executemany, side by side.

What is measured: rows per second of REST ingress, `POST
/v0/pipelines/{name}/ingress/t?format=json&array=true` through Envoy, the
manager and the runtime, with batches of 10k rows ({id, name}, ~100-byte
names, ~1.3 MB of JSON per request) sent by a fixed number of clients (2 by
default: threads of this process, one HTTP connection each, each sending its
share of the batches back to back), for a fixed number of batches per run.

Baseline, in the same run and on the same bodies: this process `json.loads`
each body and inserts its rows with `executemany` into an in-memory SQLite
table of the same schema, one transaction per batch: the least work any
server must do to take these rows, without a network, validation or a
second process. Ingress / baseline is what Stopcock's path costs on top.

Why two clients: the runtime applies one request at a time (one database
thread), so with one client every hop of a request (Envoy, the manager, the
gRPC hop to the runtime, the response) waits for the previous request's
insert; a second client keeps the runtime busy while the next request
travels, which is how a loader would use it. The single-threaded baseline
is not given that help. Pass `--ingress-clients 1` for the strictly serial
figure.

Runs alternate (baseline, ingress, then ingress, baseline, ...) after one
discarded warm-up run of each; both tables keep growing over the runs, as a
pipeline's would. Each ingress run also records the CPU used by the manager,
Envoy, the runtime and this process (in cores), which shows which process
set the pace.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench import procs
from bench.load import BenchError
from bench.stats import median, ratio
from bench.suspend import batch_body

TARGET_RATIO = 0.5  # ingress rows/s / baseline rows/s, at least
SCHEMA = "CREATE TABLE t (id INTEGER NOT NULL, name TEXT)"


@dataclass(frozen=True, slots=True)
class IngressRun:
    """One run of a fixed number of batches."""

    rows: int
    seconds: float
    rows_per_s: float
    client_cores: float  # this process (the load or the baseline itself)
    manager_cores: float = 0.0
    envoy_cores: float = 0.0
    runtime_cores: float = 0.0
    machine_cores: float = 0.0  # every process on the machine, ours included


def median_of(runs: Sequence[Any], attr: str) -> float:
    """The median of one figure over runs (of any kind)."""
    return median([float(getattr(r, attr)) for r in runs])


def rows_ratio(subject: list[IngressRun], baseline: list[IngressRun]) -> float:
    """Median subject rows/s / median baseline rows/s."""
    return ratio(median_of(subject, "rows_per_s"), median_of(baseline, "rows_per_s"))


def pair_ratios(subject: list[IngressRun], baseline: list[IngressRun]) -> list[float]:
    """Each run's rows/s against the baseline run beside it."""
    return [ratio(s.rows_per_s, b.rows_per_s) for s, b in zip(subject, baseline, strict=True)]


@dataclass(slots=True)
class IngressComparison:
    clients: int
    batch_rows: int
    batches: int
    body_bytes: int
    baseline: list[IngressRun] = field(default_factory=list)
    subject: list[IngressRun] = field(default_factory=list)

    def rows_ratio(self) -> float:
        """Median ingress rows/s / median baseline rows/s."""
        return rows_ratio(self.subject, self.baseline)

    def pair_ratios(self) -> list[float]:
        return pair_ratios(self.subject, self.baseline)


def bodies(batches: int, rows: int) -> list[bytes]:
    """`batches` JSON arrays of `rows` rows each, distinct ids."""
    return [batch_body(i * rows, rows) for i in range(batches)]


class Baseline:
    """json.loads + executemany into one in-memory table, one transaction per batch."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:", isolation_level=None)
        self.db.execute(SCHEMA)

    def run(self, batches: list[bytes], rows: int) -> IngressRun:
        applied = 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        for body in batches:
            updates = json.loads(body)
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO t (id, name) VALUES (:id, :name)", updates)
            self.db.execute("COMMIT")
            applied += len(updates)
        seconds = time.perf_counter() - t0
        if applied != rows:
            raise BenchError(f"baseline: {applied} rows applied, {rows} expected")
        cores = (time.process_time() - cpu0) / seconds
        return IngressRun(rows, seconds, rows / seconds, client_cores=cores)

    def close(self) -> None:
        self.db.close()


class Ingress:
    """`clients` threads POSTing their share of the batches, back to back."""

    def __init__(
        self,
        base_url: str,
        name: str,
        clients: int,
        cpu_pids: Callable[[], tuple[int, list[int], int]],
    ) -> None:
        self.path = f"/v0/pipelines/{name}/ingress/t"
        self.clients = [httpx.Client(base_url=base_url, timeout=60) for _ in range(clients)]
        self.cpu_pids = cpu_pids  # manager, Envoy's processes, runtime

    def _send(self, client: httpx.Client, batches: list[bytes], errors: list[str]) -> None:
        for body in batches:
            try:
                r = client.post(
                    self.path,
                    params={"format": "json", "array": "true"},
                    content=body,
                    headers={"content-type": "application/json"},
                )
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text[:300]}")
                return

    def _cpu(self, manager: int, envoy: list[int], runtime: int) -> tuple[float, ...]:
        return (
            procs.cpu_seconds(manager),
            sum(procs.cpu_seconds(pid) for pid in envoy),
            procs.cpu_seconds(runtime),
            procs.machine_busy_seconds(),
            time.process_time(),
        )

    def run(self, batches: list[bytes], rows: int) -> IngressRun:
        n = len(self.clients)
        errors: list[str] = []
        threads = [
            threading.Thread(target=self._send, args=(c, batches[i::n], errors), daemon=True)
            for i, c in enumerate(self.clients)
        ]
        pids = self.cpu_pids()
        cpu0, t0 = self._cpu(*pids), time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
        cpu = [(b - a) / seconds for a, b in zip(cpu0, self._cpu(*pids), strict=True)]
        if errors:
            raise BenchError(f"ingress failed: {errors[0]}")
        return IngressRun(
            rows,
            seconds,
            rows / seconds,
            client_cores=cpu[4],
            manager_cores=cpu[0],
            envoy_cores=cpu[1],
            runtime_cores=cpu[2],
            machine_cores=cpu[3],
        )

    def close(self) -> None:
        for c in self.clients:
            c.close()


def run(
    base_url: str,
    name: str,
    cpu_pids: Callable[[], tuple[int, list[int], int]],
    *,
    clients: int,
    batch_rows: int,
    batches: int,
    rounds: int,
    progress: Callable[[str], None],
) -> IngressComparison:
    """Interleaved runs of ingress into the running pipeline `name` and of the baseline."""
    work = bodies(batches, batch_rows)
    result = IngressComparison(clients, batch_rows, batches, len(work[0]))
    baseline, ingress = Baseline(), Ingress(base_url, name, clients, cpu_pids)
    try:
        warm = max(1, batches // 4)
        baseline.run(work[:warm], warm * batch_rows)
        ingress.run(work[:warm], warm * batch_rows)
        for i in range(rounds):
            sides = [("baseline", baseline.run, result.baseline)]
            sides.append(("ingress", ingress.run, result.subject))
            for label, side, runs in sides if i % 2 == 0 else reversed(sides):
                done = side(work, batches * batch_rows)
                runs.append(done)
                progress(
                    f"ingress {label} round {i + 1}/{rounds}: {done.rows_per_s:.0f} rows/s "
                    f"({done.rows} rows in {done.seconds:.2f} s)"
                )
    finally:
        baseline.close()
        ingress.close()
    return result
