"""The two stores side by side: one manager on SQLite, one on PostgreSQL.

Two stacks started for this section (a manager and Envoy each, fresh: the
same pipelines, created the same way), the PostgreSQL one on a new database
of the benchmark's embedded server. Two measurements, each interleaved like
bench.load's (SQLite and PostgreSQL runs alternate, the order flipping every
round, so that a drift in the machine's load hits both sides alike), with
SQLite in the baseline's place:

* acknowledged desired-state writes: `--store-clients` concurrent clients
  over native gRPC (`bench.grpc_client`, method PutDescription) each edit
  the `description` of pipelines created once and never started. Every
  call commits one change (one transaction, one history row and NOTIFY on
  PostgreSQL) and starts nothing: no runtime, no compile. The answer is
  checked to be that write. Afterwards the pipelines' `refresh_version`
  growth (one per committed change) is compared with the writes answered.
* REST GetPipeline through each stack's Envoy, loaded by wrk (bench.load's
  subject, as the `get` section does).

Besides the manager and Envoy, the PostgreSQL runs record the CPU used by
the PostgreSQL server (the postmaster and its children: the manager's
connections' backends among them), which the load table otherwise counts
as "other".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from stopcock.v1 import pipeline_service_pb2 as pb

from bench import procs
from bench.load import (
    BenchError,
    Comparison,
    CpuProbe,
    LoadRun,
    Subject,
    compare,
    grpc_subject,
    wrk_subject,
)
from tests.support import Stack

PREFIX = "bench-store-"


@dataclass(slots=True)
class StoreResult:
    """The two comparisons (SQLite the baseline, PostgreSQL the subject) and their context."""

    pipelines: int
    clients: int
    connections: int
    postgres_settings: dict[str, str]
    writes: Comparison
    gets: Comparison
    # CPU cores of the PostgreSQL server during each PostgreSQL run, in order.
    write_pg_cores: list[float] = field(default_factory=list)
    get_pg_cores: list[float] = field(default_factory=list)
    # Writes answered OK (warm-ups included) and changes committed, both stores together.
    acknowledged: dict[str, int] = field(default_factory=dict)
    committed: dict[str, int] = field(default_factory=dict)


def _server_cpu(postmaster: int) -> float:
    """CPU seconds of the PostgreSQL server: the postmaster and its live children."""
    return sum(procs.cpu_seconds(pid) for pid in [postmaster, *procs.children(postmaster)])


def _with_server_cpu(subject: Subject, postmaster: int, cores: list[float]) -> Subject:
    """`subject`, also recording the PostgreSQL server's CPU cores of each run in `cores`.

    Warm-up runs are recorded too; the caller drops them (they come first).
    """

    def run(duration: int) -> LoadRun:
        before = _server_cpu(postmaster)
        result = subject.run(duration)
        cores.append((_server_cpu(postmaster) - before) / result.seconds)
        return result

    return Subject(subject.label, run)


def _counting(subject: Subject, counts: dict[str, int], key: str, per_run: int) -> Subject:
    """`subject`, adding the writes each run had answered OK to `counts[key]`.

    `per_run`: the writes each load process makes before it is timed (one per
    worker, to check the subject works), acknowledged and committed too.
    """

    def run(duration: int) -> LoadRun:
        result = subject.run(duration)
        counts[key] = counts.get(key, 0) + result.requests + per_run
        return result

    return Subject(subject.label, run)


def _versions(stack: Stack, names: list[str]) -> int:
    """The sum of the pipelines' refresh_version: it grows by one per committed change."""
    return sum(
        stack.stub.GetPipeline(pb.GetPipelineRequest(name=n, selector="status")).refresh_version
        for n in names
    )


def postgres_settings(url: str) -> dict[str, str]:
    """The server settings a commit's cost depends on (durability is not free)."""
    names = ("fsync", "synchronous_commit", "wal_sync_method", "full_page_writes", "server_version")
    with psycopg.connect(url, autocommit=True) as conn:
        return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]


def run(
    sqlite: Stack,
    postgres: Stack,
    *,
    database_url: str,
    postmaster: int,
    wrk: str,
    pipelines: int,
    clients: int,
    connections: int,
    rounds: int,
    duration: int,
    warmup: int,
    progress: Callable[[str], None],
) -> StoreResult:
    """The writes, then the reads, each SQLite vs PostgreSQL (see the module doc)."""
    names = [f"{PREFIX}{i}" for i in range(pipelines)]
    stacks = {"SQLite": sqlite, "PostgreSQL": postgres}
    for label, stack in stacks.items():
        progress(f"store: creating {pipelines} pipelines on {label}")
        for name in names:
            stack.create(name)
    before = {label: _versions(stack, names) for label, stack in stacks.items()}

    def probe(stack: Stack) -> CpuProbe:
        assert stack.manager is not None and stack.envoy is not None
        return CpuProbe(stack.manager.pid, procs.pids_mentioning(str(stack.envoy.config_path)))

    acknowledged: dict[str, int] = {}
    write_pg: list[float] = []
    writes = {
        label: _counting(
            grpc_subject(
                label,
                port=stack.grpc_port,
                method="PutDescription",
                name=",".join(names),
                concurrency=clients,
                probe=probe(stack),
            ),
            acknowledged,
            label,
            per_run=clients,
        )
        for label, stack in stacks.items()
    }
    writes["PostgreSQL"] = _with_server_cpu(writes["PostgreSQL"], postmaster, write_pg)
    write_cmp = compare(
        "PutPipeline (description edit), gRPC",
        writes["SQLite"],
        writes["PostgreSQL"],
        rounds=rounds,
        duration=duration,
        warmup=warmup,
        progress=progress,
    )
    committed = {label: _versions(stack, names) - before[label] for label, stack in stacks.items()}

    get_pg: list[float] = []
    path = f"/v0/pipelines/{names[0]}"
    gets = {
        label: wrk_subject(
            label, f"http://127.0.0.1:{stack.rest_port}{path}", connections, probe(stack), wrk
        )
        for label, stack in stacks.items()
    }
    gets["PostgreSQL"] = _with_server_cpu(gets["PostgreSQL"], postmaster, get_pg)
    get_cmp = compare(
        f"GET {path}, REST (Envoy, wrk)",
        gets["SQLite"],
        gets["PostgreSQL"],
        rounds=rounds,
        duration=duration,
        warmup=warmup,
        progress=progress,
    )
    if sum(acknowledged.values()) == 0:
        raise BenchError("store: no write was acknowledged")
    return StoreResult(
        pipelines=pipelines,
        clients=clients,
        connections=connections,
        postgres_settings=postgres_settings(database_url),
        writes=write_cmp,
        gets=get_cmp,
        write_pg_cores=write_pg[1:],  # the first is the warm-up's
        get_pg_cores=get_pg[1:],
        acknowledged=acknowledged,
        committed=committed,
    )
