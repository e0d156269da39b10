"""Manager replicas on one PostgreSQL database: any replica serves any call, each pipeline
is owned through a fenced lease, and the owner's death or freeze hands it over.

Three real managers share the database and the data directory, with real
runtime processes; calls go to chosen replicas over gRPC (`stack.stubs[i]`)
or over REST through Envoy. A short lease (STOPCOCK_LEASE_TTL_SECS=2) keeps
failovers quick; nothing here asserts how quick (that is `make bench`).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from stopcock.v1 import pipeline_service_pb2 as pb

from tests.support import Stack, running_stack, wait_until
from tests.test_checkpoints import rows

pytestmark = pytest.mark.e2e

TTL = "2"


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str) -> Iterator[Stack]:
    env = {"STOPCOCK_DATABASE_URL": postgres_url, "STOPCOCK_LEASE_TTL_SECS": TTL}
    with running_stack(tmp_path / "stack", env, replicas=3) as stack:
        stack.env["TEST_DATABASE_URL"] = postgres_url
        yield stack


def _db(stack: Stack) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(stack.env["TEST_DATABASE_URL"], autocommit=True)


def lease(stack: Stack, pipeline_id: str) -> tuple[int | None, int]:
    """(index of the owning replica or None, epoch) of a pipeline's lease, from the database."""
    with _db(stack) as conn:
        row = conn.execute(
            "SELECT r.pid, l.epoch FROM leases l LEFT JOIN replicas r ON r.id = l.owner"
            " AND r.expires_at > clock_timestamp() WHERE l.pipeline_id = %s",
            (pipeline_id,),
        ).fetchone()
    assert row is not None
    pid, epoch = row
    owner = next((i for i, m in enumerate(stack.managers) if m is not None and m.pid == pid), None)
    return owner, int(epoch)  # type: ignore[call-overload]


def owned_by_another(stack: Stack, pipeline_id: str, than: int, epoch: int) -> tuple[int, int]:
    def check() -> tuple[int, int] | None:
        owner, now = lease(stack, pipeline_id)
        return (owner, now) if owner is not None and owner != than and now > epoch else None

    return wait_until(check, "another replica to own the pipeline")


def test_any_replica_serves_any_call_and_sees_the_others_writes(replicas: Stack) -> None:
    stack = replicas
    created = stack.create("p")
    stack.stubs[1].StartPipeline(pb.StartPipelineRequest(name="p"))
    # Read-your-writes across replicas: the 202 from replica 1 means replica 2 sees it.
    seen = stack.stubs[2].GetPipeline(pb.GetPipelineRequest(name="p"))
    assert seen.deployment_desired_status == "Running"
    stack.wait_status("p", "Running")
    assert len(stack.runtime_pids("p")) == 1
    owner, epoch = lease(stack, created["id"])
    assert owner is not None and epoch >= 1
    listed = stack.stubs[0].ListPipelines(pb.ListPipelinesRequest())
    assert [p.name for p in listed.pipelines] == ["p"]
    # A name taken through one replica is taken for all.
    with pytest.raises(grpc.RpcError) as refused:
        stack.stubs[2].CreatePipeline(
            pb.CreatePipelineRequest(
                pipeline=pb.PipelineDefinition(name="p", program_code="CREATE TABLE t (x INT);")
            )
        )
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    stack.stubs[2].StopPipeline(pb.StopPipelineRequest(name="p", force=True))
    stack.wait_status("p", "Stopped")
    assert stack.runtime_pids("p") == []


def test_a_watch_on_one_replica_sees_every_change_through_the_others(replicas: Stack) -> None:
    stack = replicas
    created = stack.create("w")
    start_version = stack.get("w")["refresh_version"]
    seen: list[pb.Pipeline] = []
    resumed: list[bool] = []
    stopped = threading.Event()

    def follow() -> None:
        stream = stack.stubs[2].WatchPipeline(
            pb.WatchPipelineRequest(name="w", after_refresh_version=start_version)
        )
        for change in stream:
            seen.append(change.pipeline)
            resumed.append(change.resumed)
            if change.pipeline.deployment_status == "Stopped" and len(seen) > 1:
                stopped.set()
                stream.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves it untyped
                return

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    stack.stubs[0].StartPipeline(pb.StartPipelineRequest(name="w"))
    stack.wait_status("w", "Running")
    stack.stubs[1].StopPipeline(pb.StopPipelineRequest(name="w", force=True))
    wait_until(stopped.is_set, "the watcher to see the pipeline stop")
    watcher.join(5)
    versions = [p.refresh_version for p in seen]
    # Every version, in order, none twice, resumed from the one asked for.
    assert versions == list(range(start_version + 1, start_version + 1 + len(versions)))
    assert all(resumed)
    statuses = [p.deployment_status for p in seen]
    assert "Running" in statuses and statuses[-1] == "Stopped"
    assert {p.id for p in seen} == {created["id"]}


def test_kill_9_of_the_owner_hands_the_pipeline_over_with_its_runtime(replicas: Stack) -> None:
    stack = replicas
    created = stack.create("k")
    stack.start("k")
    assert stack.ingest("k", rows(0, 5)).status_code == 200
    runtime = stack.runtime_info("k")
    deployment_id = stack.get("k")["deployment_id"]
    owner, epoch = lease(stack, created["id"])
    assert owner is not None

    stack.kill_manager(owner)
    new_owner, new_epoch = owned_by_another(stack, created["id"], owner, epoch)

    # Re-adopted in place: the same process, the same deployment.
    after = stack.stubs[new_owner].GetPipeline(pb.GetPipelineRequest(name="k"))
    assert after.deployment_id.string_value == deployment_id == runtime["deployment_id"]
    assert stack.runtime_info("k") == runtime
    assert stack.runtime_pids("k") == [runtime["pid"]]
    assert after.deployment_status == "Running"
    # The runtime has heard the new owner's epoch (it fences the old one).
    epoch_file = stack.data_dir / "pipelines" / created["id"] / "run" / "epoch"
    wait_until(
        lambda: epoch_file.exists() and int(epoch_file.read_text()) == new_epoch,
        "the runtime to record the new owner's epoch",
    )
    # The new owner carries on: a suspend through yet another replica, then a resume.
    other = next(i for i in range(3) if i not in (owner, new_owner))
    stack.stubs[other].StopPipeline(pb.StopPipelineRequest(name="k", force=False))
    p = stack.wait_status("k", "Stopped")
    assert p["deployment_error"] is None, p["deployment_error"]
    assert len(p["storage_status_details"]["checkpoints"]) == 1
    stack.start_manager(owner)  # back, as a new replica
    stack.start("k")
    assert stack.ids("k") == list(range(5))
    stack.force_stop("k")


def test_kill_9_of_the_owner_mid_suspend_ends_with_one_final_checkpoint(
    tmp_path: Path, postgres_url: str
) -> None:
    hold = tmp_path / "hold"
    env = {
        "STOPCOCK_DATABASE_URL": postgres_url,
        "STOPCOCK_LEASE_TTL_SECS": TTL,
        "STOPCOCK_RUNTIME_TEST_FAULTS": f"checkpoint_hold_file={hold}",
        "TEST_DATABASE_URL": postgres_url,
    }
    with running_stack(tmp_path / "stack", env, replicas=3) as stack:
        created = stack.create("s")
        stack.start("s")
        assert stack.ingest("s", rows(0, 7)).status_code == 200
        pid = stack.runtime_info("s")["pid"]
        owner, epoch = lease(stack, created["id"])
        assert owner is not None
        hold.touch()
        assert stack.post("s", "stop").status_code == 202
        checkpoints = stack.storage("s") / "checkpoints"
        wait_until(lambda: list(checkpoints.glob("*.tmp")), "the suspend's checkpoint to begin")

        stack.kill_manager(owner)
        owned_by_another(stack, created["id"], owner, epoch)
        hold.unlink()

        p = stack.wait_status("s", "Stopped")
        assert p["deployment_error"] is None, p["deployment_error"]
        assert not os.path.exists(f"/proc/{pid}/stat") or stack.runtime_pids("s") == []
        # Exactly one final checkpoint, made by the runtime the first owner asked.
        assert len(p["storage_status_details"]["checkpoints"]) == 1
        assert len([d for d in checkpoints.iterdir() if not d.name.endswith(".tmp")]) == 1
        stack.start("s")
        assert stack.ids("s") == list(range(7))
        stack.force_stop("s")


def test_a_graceful_shutdown_hands_pipelines_over_without_waiting_for_the_lease(
    tmp_path: Path, postgres_url: str
) -> None:
    # A lease of a minute: had the pipeline waited for it to expire, the
    # bounded wait below would time out. A graceful stop releases it.
    env = {
        "STOPCOCK_DATABASE_URL": postgres_url,
        "STOPCOCK_LEASE_TTL_SECS": "60",
        "TEST_DATABASE_URL": postgres_url,
    }
    with running_stack(tmp_path / "stack", env, replicas=2) as stack:
        created = stack.create("g")
        stack.start("g")
        pid = stack.runtime_info("g")["pid"]
        owner, epoch = lease(stack, created["id"])
        assert owner is not None
        stack.kill_manager(owner, signal.SIGTERM)
        new_owner, _ = owned_by_another(stack, created["id"], owner, epoch)
        assert stack.runtime_pids("g") == [pid]
        stack.stubs[new_owner].StopPipeline(pb.StopPipelineRequest(name="g", force=True))
        wait_until(
            lambda: (
                stack.stubs[new_owner]
                .GetPipeline(pb.GetPipelineRequest(name="g"))
                .deployment_status
                == "Stopped"
            ),
            "the new owner to stop it",
        )


def test_a_frozen_owner_loses_its_lease_and_is_fenced_when_it_thaws(replicas: Stack) -> None:
    stack = replicas
    created = stack.create("f")
    stack.start("f")
    runtime = stack.runtime_info("f")
    owner, epoch = lease(stack, created["id"])
    assert owner is not None
    frozen = stack.managers[owner]
    assert frozen is not None
    frozen.send_signal(signal.SIGSTOP)
    try:
        new_owner, new_epoch = owned_by_another(stack, created["id"], owner, epoch)
        epoch_file = stack.data_dir / "pipelines" / created["id"] / "run" / "epoch"
        wait_until(
            lambda: epoch_file.exists() and int(epoch_file.read_text()) == new_epoch,
            "the runtime to record the new owner's epoch",
        )
    finally:
        frozen.send_signal(signal.SIGCONT)
    # Thawed, the old owner finds its lease lapsed and starts over as a new
    # replica: it counts the lapse and does not take the pipeline back.
    metrics_port = stack.metrics_ports[owner]

    def lapsed() -> bool:
        import httpx

        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        return any(
            line.startswith("stopcock_lease_lapses_total") and float(line.split()[-1]) >= 1
            for line in text.splitlines()
        )

    wait_until(lapsed, "the thawed replica to notice its lease lapsed")
    assert lease(stack, created["id"]) == (new_owner, new_epoch)
    assert stack.runtime_info("f") == runtime
    assert stack.runtime_pids("f") == [runtime["pid"]]
    assert stack.get("f")["deployment_status"] == "Running"
    stack.stubs[owner].StopPipeline(pb.StopPipelineRequest(name="f", force=True))
    stack.wait_status("f", "Stopped")
