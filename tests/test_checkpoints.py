"""Checkpoints, suspend and resume: `stop?force=false` loses nothing.

All through Envoy, with real runtime processes; test-only fault files hold a
checkpoint (checkpoint_hold_file) or make it fail for a while
(checkpoint_obstacle_file) so that a test can act at that moment.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support import Stack, running_stack, wait_until
from tests.test_rest_pipelines import assert_error

pytestmark = [pytest.mark.e2e, pytest.mark.both_stores]


def rows(start: int, count: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"row {i}"} for i in range(start, start + count)]


def checkpoint(stack: Stack, name: str) -> int:
    r = stack.post(name, "checkpoint")
    assert r.status_code == 200, r.text
    seq: int = r.json()["checkpoint_sequence_number"]
    incarnation = r.json()["incarnation_uuid"]

    def done() -> bool:
        status = stack.rest.get(
            f"/v0/pipelines/{name}/checkpoint_status", params={"incarnation_uuid": incarnation}
        ).json()
        assert status["failure"] is None, status
        return status["success"] is not None and status["success"] >= seq

    wait_until(done, "the checkpoint to succeed")
    return seq


def test_suspend_then_start_keeps_every_acknowledged_row_once(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    acknowledged: list[int] = []
    refused: list[int] = []
    stop_feeding = threading.Event()

    def feed() -> None:
        # Keeps ingesting while the suspend happens: every batch is either
        # acknowledged (200) or refused (503), never half-taken.
        start = 0
        while not stop_feeding.is_set():
            batch = rows(start, 50)
            r = stack.ingest(name, batch)
            ids = [row["id"] for row in batch]
            (acknowledged if r.status_code == 200 else refused).extend(ids)
            if r.status_code != 200:
                assert r.status_code == 503, r.text
                return
            start += 50

    feeder = threading.Thread(target=feed)
    feeder.start()
    wait_until(lambda: len(acknowledged) >= 500, "some rows to be ingested")
    r = stack.post(name, "stop")
    assert r.status_code == 202
    assert stack.get(name, "status")["deployment_desired_status"] == "Suspended"
    p = stack.wait_status(name, "Stopped")
    stop_feeding.set()
    feeder.join(timeout=30)
    assert p["deployment_error"] is None
    assert p["deployment_desired_status"] == "Stopped"
    assert p["storage_status"] == "InUse"
    assert p["storage_status_details"]["checkpoints"]

    stack.start(name)
    assert stack.ids(name) == sorted(acknowledged)  # every one, exactly once
    stack.force_stop(name)


def test_force_stop_resumes_from_the_latest_checkpoint(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    assert stack.ingest(name, rows(0, 10)).status_code == 200
    checkpoint(stack, name)
    assert stack.ingest(name, rows(10, 10)).status_code == 200
    stack.force_stop(name)
    stack.start(name)
    assert stack.ids(name) == list(range(10))
    stack.force_stop(name)
    # Clearing storage makes the next start fresh.
    assert stack.post(name, "clear").status_code == 202
    wait_until(lambda: stack.get(name, "status")["storage_status"] == "Cleared", "cleared")
    assert stack.get(name)["storage_status_details"] is None
    stack.start(name)
    assert stack.ids(name) == []
    stack.force_stop(name)


def test_a_pipeline_without_checkpoints_starts_empty_and_keeps_two(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    assert stack.ids(name) == []
    for i in range(3):
        stack.ingest(name, rows(i, 1))
        checkpoint(stack, name)
    # The runtime reports its checkpoints; the manager records them as soon as
    # the report arrives, which may be just after checkpoint_status answered.
    details = wait_until(
        lambda: (
            (listed := stack.get(name)["storage_status_details"]["checkpoints"])
            and listed[-1]["sequence_number"] == 2
            and listed
        ),
        "the last checkpoint to be listed",
    )
    assert [c["sequence_number"] for c in details] == [1, 2]
    assert [c["processed_records"] for c in details] == [2, 3]
    assert all(c["size"] > 0 and c["uuid"] for c in details)
    # Replaced checkpoints are deleted in the background, just after the report.
    listed = sorted(f"{c['uuid']}.sqlite" for c in details)
    wait_until(
        lambda: sorted(p.name for p in (stack.storage(name) / "checkpoints").iterdir()) == listed,
        "only the listed checkpoint files to remain",
    )
    stack.force_stop(name)


def test_periodic_checkpoints_follow_fault_tolerance(stack: Stack, name: str) -> None:
    config = {"fault_tolerance": {"model": "at_least_once", "checkpoint_interval_secs": 1}}
    stack.create(name, runtime_config=config)
    stack.start(name)
    stack.ingest(name, rows(0, 5))
    wait_until(
        lambda: any(
            c["processed_records"] == 5
            for c in (stack.get(name)["storage_status_details"] or {}).get("checkpoints", [])
        ),
        "a periodic checkpoint holding the rows",
    )
    stack.force_stop(name)
    stack.start(name)
    assert stack.ids(name) == list(range(5))
    stack.force_stop(name)


def test_suspend_needs_storage_and_a_reachable_runtime(stack: Stack, name: str) -> None:
    stack.create(name, runtime_config={"storage": None})
    stack.start(name)
    assert_error(stack.post(name, "checkpoint"), 405, "UnsupportedPipelineAction")
    assert stack.get(name, "status")["deployment_status"] == "Running"  # nothing changed
    # A suspend without storage is accepted (as in Feldera), then fails for good:
    # a forced stop with the reason recorded.
    assert stack.post(name, "stop").status_code == 202
    stopped = stack.wait_status(name, "Stopped")
    error = stopped["deployment_error"]
    assert error["error_code"] == "SuspendFailed" and "storage is disabled" in error["message"]

    other = f"{name}-hung"
    stack.create(other)
    stack.start(other)
    pid = stack.runtime_info(other)["pid"]
    os.kill(pid, signal.SIGSTOP)  # hung: alive, but answers nothing
    try:
        stack.wait_status(other, "Unavailable")
        r = stack.post(other, "stop")
        body = assert_error(r, 503, "PipelineInteractionUnreachable")
        assert r.headers["retry-after"] == "5"
        assert body["details"]["pipeline_name"] == other
        assert stack.get(other, "status")["deployment_desired_status"] == "Running"
        assert_error(stack.post(other, "pause"), 503, "PipelineInteractionUnreachable")
    finally:
        os.kill(pid, signal.SIGCONT)
    stack.wait_status(other, "Running")
    stack.force_stop(other)


def test_permanent_suspend_failure_ends_in_a_forced_stop(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    stack.ingest(name, rows(0, 3))
    storage = stack.storage(name)
    shutil.rmtree(storage)
    storage.write_text("not a directory")  # storage that cannot be written, even by root
    assert stack.post(name, "stop").status_code == 202
    p = stack.wait_status(name, "Stopped")
    assert p["deployment_error"]["error_code"] == "SuspendFailed"
    assert p["deployment_desired_status"] == "Stopped"
    storage.unlink()


def test_temporary_obstacle_retries_until_it_clears_or_a_force_stop(tmp_path: Path) -> None:
    obstacle = tmp_path / "obstacle"
    env = {"STOPCOCK_RUNTIME_TEST_FAULTS": f"checkpoint_obstacle_file={obstacle}"}
    with running_stack(tmp_path / "stack", env) as stack:
        stack.create("p")
        stack.start("p")
        stack.ingest("p", rows(0, 4))
        obstacle.touch()
        assert stack.post("p", "stop").status_code == 202
        p = wait_until(
            lambda: (
                (q := stack.get("p", "status"))["deployment_runtime_status_details"]
                and q["deployment_runtime_status_details"].get("suspend", {}).get("attempts", 0)
                >= 3
                and q
            ),
            "the suspend to retry",
        )
        suspend = p["deployment_runtime_status_details"]["suspend"]
        assert "busy" in suspend["last_error"]
        assert suspend["waiting_for"] == ["storage to accept the final checkpoint"]
        assert p["deployment_desired_status"] == "Suspended"
        assert p["deployment_status"] == "Running"
        # While suspending, only a force stop is accepted.
        assert_error(stack.post("p", "pause"), 400, "InvalidTransition")
        assert_error(stack.post("p", "resume"), 400, "InvalidTransition")
        body = assert_error(stack.post("p", "start"), 400, "IllegalPipelineAction")
        assert "suspending" in body["details"]["hint"]
        assert_error(stack.ingest("p", rows(9, 1)), 503, "PipelineUnavailable")
        obstacle.unlink()
        p = stack.wait_status("p", "Stopped")
        assert p["deployment_error"] is None
        stack.start("p")
        assert stack.ids("p") == list(range(4))

        # A force stop cancels a suspend that keeps failing.
        stack.ingest("p", rows(4, 2))
        obstacle.touch()
        assert stack.post("p", "stop").status_code == 202
        wait_until(
            lambda: (
                "attempts"
                in (stack.get("p", "status")["deployment_runtime_status_details"] or {}).get(
                    "suspend", {}
                )
            ),
            "the suspend to retry",
        )
        assert stack.post("p", "stop", force="true").status_code == 202
        p = stack.wait_status("p", "Stopped")
        assert p["deployment_error"] is None
        obstacle.unlink()
        stack.start("p")
        assert stack.ids("p") == list(range(4))  # the suspend never checkpointed 4 and 5


def test_runtime_killed_mid_checkpoint_keeps_the_previous_one(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    env = {"STOPCOCK_RUNTIME_TEST_FAULTS": f"checkpoint_hold_file={hold}"}
    with running_stack(tmp_path / "stack", env) as stack:
        stack.create("p")
        stack.start("p")
        stack.ingest("p", rows(0, 5))
        checkpoint(stack, "p")
        hold.touch()
        stack.ingest("p", rows(5, 5))
        assert stack.post("p", "checkpoint").status_code == 200
        checkpoints = stack.storage("p") / "checkpoints"
        wait_until(lambda: list(checkpoints.glob("*.tmp")), "the held checkpoint's data")
        os.killpg(stack.runtime_info("p")["pid"], signal.SIGKILL)
        stack.wait_status("p", "Stopped")
        hold.unlink()
        stack.start("p")
        assert stack.ids("p") == list(range(5))
        assert len(stack.get("p")["storage_status_details"]["checkpoints"]) == 1


def test_manager_killed_mid_suspend_completes_it_after_restart(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    env = {"STOPCOCK_RUNTIME_TEST_FAULTS": f"checkpoint_hold_file={hold}"}
    with running_stack(tmp_path / "stack", env) as stack:
        stack.create("p")
        stack.start("p")
        stack.ingest("p", rows(0, 7))
        hold.touch()
        assert stack.post("p", "stop").status_code == 202
        wait_until(
            lambda: list((stack.storage("p") / "checkpoints").glob("*.tmp")),
            "the suspend's checkpoint to be under way",
        )
        stack.kill_manager()
        hold.unlink()
        stack.start_manager()
        p = stack.wait_status("p", "Stopped")
        assert p["deployment_error"] is None, p["deployment_error"]
        stack.start("p")
        assert stack.ids("p") == list(range(7))


def test_a_checkpoint_is_a_consistent_cut_of_concurrent_ingress(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    acknowledged: list[list[int]] = []
    done = threading.Event()

    def feed() -> None:
        start = 0
        while not done.is_set():
            batch = rows(start, 200)
            r = stack.ingest(name, batch)
            assert r.status_code == 200, r.text
            acknowledged.append([row["id"] for row in batch])
            start += 200

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        wait_until(lambda: len(acknowledged) >= 3, "ingress to be under way")
        checkpoint(stack, name)  # taken while batches keep arriving
        wait_until(lambda: len(acknowledged) >= 6, "more ingress after the checkpoint")
    finally:
        done.set()
        feeder.join(timeout=30)
    stack.force_stop(name)
    stack.start(name)
    restored = stack.ids(name)
    # Whole batches only, and a prefix of them in acknowledgement order.
    assert restored and len(restored) % 200 == 0
    expected = [i for batch in acknowledged[: len(restored) // 200] for i in batch]
    assert restored == expected
    assert len(restored) < sum(len(b) for b in acknowledged)  # later batches came after the cut
    stack.force_stop(name)


def test_a_suspend_says_what_it_waits_on(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    env = {"STOPCOCK_RUNTIME_TEST_FAULTS": f"checkpoint_hold_file={hold}"}
    with running_stack(tmp_path / "stack", env) as stack:
        stack.create("p")
        stack.start("p")
        stack.ingest("p", rows(0, 3))
        hold.touch()
        assert stack.post("p", "stop").status_code == 202

        def waiting_for() -> list[str]:
            details = stack.get("p", "status")["deployment_runtime_status_details"] or {}
            waits: list[str] = details.get("suspend", {}).get("waiting_for", [])
            return waits

        wait_until(
            lambda: "the final checkpoint to be written" in waiting_for(), "the checkpoint wait"
        )
        # A runtime that stops answering (here: stopped by a signal) mid-suspend.
        pid = stack.runtime_info("p")["pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(lambda: "the runtime to answer" in waiting_for(), "the runtime wait")
            assert stack.get("p", "status")["deployment_status"] == "Unavailable"
        finally:
            os.kill(pid, signal.SIGCONT)
        hold.unlink()
        p = stack.wait_status("p", "Stopped")
        assert p["deployment_error"] is None, p["deployment_error"]
        stack.start("p")
        assert stack.ids("p") == [0, 1, 2]


def test_checkpoints_live_in_storage_dir_when_it_is_set(tmp_path: Path) -> None:
    storage = tmp_path / "shared-storage"
    with running_stack(tmp_path / "stack", {"STOPCOCK_STORAGE_DIR": str(storage)}) as stack:
        pipeline_id = stack.create("p")["id"]
        stack.start("p")
        assert stack.ingest("p", rows(0, 3)).status_code == 200
        checkpoint(stack, "p")
        stack.force_stop("p")
        assert list((storage / pipeline_id / "checkpoints").iterdir())
        assert not stack.storage("p").exists()  # nothing under the data directory
        stack.start("p")
        assert stack.ids("p") == [0, 1, 2]
        stack.force_stop("p")
        assert stack.post("p", "clear").status_code == 202
        wait_until(lambda: stack.get("p", "status")["storage_status"] == "Cleared", "cleared")
        assert not (storage / pipeline_id).exists()


def test_storage_details_list_no_checkpoints_as_an_empty_list(stack: Stack, name: str) -> None:
    # Feldera: null while storage is cleared; once a runtime with storage has
    # reported, {"checkpoints": [...]}, empty too, kept after a stop.
    stack.create(name)
    assert stack.get(name)["storage_status_details"] is None
    stack.start(name)
    assert stack.get(name)["storage_status_details"] == {"checkpoints": []}
    stack.force_stop(name)
    assert stack.get(name)["storage_status_details"] == {"checkpoints": []}
    assert stack.post(name, "clear").status_code == 202
    wait_until(lambda: stack.get(name, "status")["storage_status"] == "Cleared", "cleared")
    assert stack.get(name)["storage_status_details"] is None
    # Without storage, the runtime has no checkpoints to list: null, as in Feldera.
    stack.create(f"{name}-nostore", runtime_config={"storage": None})
    stack.start(f"{name}-nostore")
    assert stack.get(f"{name}-nostore")["storage_status_details"] is None
    stack.force_stop(f"{name}-nostore")
