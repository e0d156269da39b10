"""Failover time: `kill -9` of the replica owning a Running pipeline, until another owns it.

Three manager replicas share a PostgreSQL database (one stack, its own
database of the benchmark's embedded server) with one Running pipeline.
Each round:

1. finds the pipeline's owner in the database (`leases` joined to a live
   `replicas` row, whose `pid` is the manager's), its lease epoch, and the
   runtime's pid and deployment id;
2. notes the time and SIGKILLs that manager (no chance to release anything:
   its lease must expire, TTL `STOPCOCK_LEASE_TTL_SECS`);
3. polls the database every POLL_SECS until the lease has a live owner
   other than the killed replica with a higher epoch: the failover time is
   kill -> that poll (so it includes up to one poll period and one query);
4. then checks that the new owner's actor re-adopted the runtime in place:
   the runtime has recorded the new epoch (run/epoch: the new owner spoke to
   it), the same runtime process is the pipeline's only one, and a
   surviving replica's gRPC GetPipeline says Running with the same
   deployment id. Kill -> all of that is reported as "re-adopted";
5. restarts the killed replica (a new replica: new id, new pid) and waits for
   it to answer, before the next round, so that every kill leaves two
   replicas to take over.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from stopcock.v1 import pipeline_service_pb2 as pb

from bench.load import BenchError
from tests.support import WAIT, Stack

NAME = "bench-failover"
POLL_SECS = 0.02
TARGET_P99_S = 5.0

T = TypeVar("T")
# replica.py's line on registering: "replica <id> registered (lease TTL 3.0s)".
_TTL_LOGGED = re.compile(r"registered \(lease TTL ([\d.]+)s\)")
Owner = tuple[int | None, int]  # (replica index or None, lease epoch)


@dataclass(frozen=True, slots=True)
class Kill:
    """One kill -9 of the owner and what followed."""

    killed: int  # replica index
    new_owner: int
    epoch_before: int
    epoch_after: int
    lease_ms: float  # kill -> a live other owner with a higher epoch seen
    adopted_ms: float  # kill -> the runtime re-adopted (see the module doc)
    restart_ms: float  # the killed replica restarted until it answered (context)
    polls: int  # database polls until the new owner was seen


@dataclass(frozen=True, slots=True)
class FailoverResult:
    ttl_s: float  # the lease TTL, as every replica logged it when registering
    replicas: int
    runtime_pid: int
    kills: list[Kill]


def _owner(db: psycopg.Connection[tuple[object, ...]], stack: Stack, pipeline_id: str) -> Owner:
    """(index of the live owning replica or None, epoch), as tests/test_replicas.py reads it."""
    row = db.execute(
        "SELECT r.pid, l.epoch FROM leases l LEFT JOIN replicas r ON r.id = l.owner"
        " AND r.expires_at > clock_timestamp() WHERE l.pipeline_id = %s",
        (pipeline_id,),
    ).fetchone()
    if row is None:
        raise BenchError(f"failover: no lease row for pipeline {pipeline_id}")
    pid, epoch = row
    owner = next((i for i, m in enumerate(stack.managers) if m is not None and m.pid == pid), None)
    return owner, int(epoch)  # type: ignore[call-overload]


def _poll(check: Callable[[], T | None], what: str) -> tuple[T, int]:
    """Bounded poll every POLL_SECS: check()'s first truthy value and the polls it took."""
    deadline = time.monotonic() + WAIT
    polls = 0
    while True:
        polls += 1
        if result := check():
            return result, polls
        if time.monotonic() > deadline:
            raise BenchError(f"failover: timed out after {WAIT}s waiting for {what}")
        time.sleep(POLL_SECS)


def _round(
    stack: Stack,
    db: psycopg.Connection[tuple[object, ...]],
    pipeline_id: str,
    runtime_pid: int,
    deployment_id: str,
) -> Kill:
    def owned() -> Owner | None:
        found = _owner(db, stack, pipeline_id)
        return found if found[0] is not None else None

    (owner, epoch), _ = _poll(owned, "a live owner")
    assert owner is not None
    epoch_file = stack.data_dir / "pipelines" / pipeline_id / "run" / "epoch"

    killed_at = time.monotonic()
    stack.kill_manager(owner)

    def taken() -> Owner | None:
        new, now = _owner(db, stack, pipeline_id)
        return (new, now) if new is not None and new != owner and now > epoch else None

    (new_owner, new_epoch), polls = _poll(taken, "another replica to hold the lease")
    lease_ms = (time.monotonic() - killed_at) * 1000
    assert new_owner is not None
    survivor = stack.stubs[new_owner]

    def adopted() -> bool:
        if not epoch_file.exists() or epoch_file.read_text().strip() != str(new_epoch):
            return False
        # Every runtime of the stack (its only pipeline): by name would ask REST,
        # and Envoy forwards to replica 0 only, which may be the one killed.
        if stack.runtime_pids() != [runtime_pid]:
            return False
        p = survivor.GetPipeline(pb.GetPipelineRequest(name=NAME, selector="status"), timeout=5)
        return p.deployment_status == "Running" and p.deployment_id.string_value == deployment_id

    _poll(adopted, "the new owner to re-adopt the runtime in place")
    adopted_ms = (time.monotonic() - killed_at) * 1000

    restart = time.monotonic()
    stack.start_manager(owner)
    return Kill(
        killed=owner,
        new_owner=new_owner,
        epoch_before=epoch,
        epoch_after=new_epoch,
        lease_ms=lease_ms,
        adopted_ms=adopted_ms,
        restart_ms=(time.monotonic() - restart) * 1000,
        polls=polls,
    )


def _logged_ttl(stack: Stack) -> float:
    """The lease TTL the replicas use, from their logs: what they run with, whatever
    the environment said (one value, or the measurement would mix TTLs)."""
    logs = [stack.root / "manager.log"]
    logs += [stack.root / f"manager-{i}.log" for i in range(1, len(stack.managers))]
    ttls = {float(t) for log in logs for t in _TTL_LOGGED.findall(log.read_text(errors="replace"))}
    if len(ttls) != 1:
        raise BenchError(f"failover: the replicas logged lease TTLs {sorted(ttls)}, not one")
    return ttls.pop()


def run(
    stack: Stack, database_url: str, *, kills: int, progress: Callable[[str], None]
) -> FailoverResult:
    """`kills` rounds on `stack` (its replicas all started; see the module doc)."""
    ttl = _logged_ttl(stack)
    created = stack.create(NAME)
    stack.start(NAME)
    pipeline_id: str = created["id"]
    pids = stack.runtime_pids()
    if len(pids) != 1:
        raise BenchError(f"failover: {NAME} should have one runtime process, not {pids}")
    deployment_id = stack.get(NAME)["deployment_id"]
    done: list[Kill] = []
    with psycopg.connect(database_url, autocommit=True) as db:
        for i in range(kills):
            k = _round(stack, db, pipeline_id, pids[0], deployment_id)
            done.append(k)
            progress(
                f"failover {i + 1}/{kills}: replica {k.killed} killed, replica {k.new_owner} "
                f"holds the lease after {k.lease_ms:.0f} ms (epoch {k.epoch_before} -> "
                f"{k.epoch_after}), re-adopted after {k.adopted_ms:.0f} ms"
            )
    return FailoverResult(
        ttl_s=ttl,
        replicas=len(stack.managers),
        runtime_pid=pids[0],
        kills=done,
    )
