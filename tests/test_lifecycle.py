"""Deployment lifecycle over REST through Envoy, with real runtime processes."""

from __future__ import annotations

import uuid

import pytest

from tests.support import Stack, process_alive, wait_until
from tests.test_rest_pipelines import assert_error

pytestmark = [pytest.mark.e2e, pytest.mark.both_stores]


def test_start_running_then_pause_resume_and_force_stop(stack: Stack, name: str) -> None:
    stack.create(name)
    r = stack.post(name, "start")
    assert r.status_code == 202
    # The desired state is recorded before the 202; the work follows.
    assert stack.get(name, "status")["deployment_desired_status"] == "Running"
    p = stack.wait_status(name, "Running")
    uuid.UUID(p["deployment_id"])
    assert p["deployment_resources_status"] == "Provisioned"
    assert p["deployment_runtime_status"] == "Running"
    assert p["deployment_runtime_desired_status"] == "Running"
    assert p["deployment_initial"] == "Running"
    assert p["storage_status"] == "InUse"
    pid = stack.runtime_info(name)["pid"]
    assert process_alive(pid)

    assert stack.post(name, "pause").status_code == 202
    assert stack.get(name, "status")["deployment_desired_status"] == "Paused"
    stack.wait_status(name, "Paused")
    assert stack.post(name, "pause").status_code == 202  # repeated: fine
    assert stack.post(name, "resume").status_code == 202
    stack.wait_status(name, "Running")

    # A repeated identical start changes nothing; another `initial` is refused.
    before = stack.get(name, "status")
    assert stack.post(name, "start").status_code == 202
    assert stack.get(name, "status")["deployment_id"] == before["deployment_id"]
    assert_error(stack.post(name, "start", initial="paused"), 400, "InitialImmutableUnlessStopped")

    r = stack.post(name, "stop", force="true")
    assert r.status_code == 202
    assert stack.get(name, "status")["deployment_desired_status"] == "Stopped"
    p = stack.wait_status(name, "Stopped")
    assert p["deployment_error"] is None and p["deployment_id"] is None
    assert p["deployment_runtime_status"] is None
    wait_until(lambda: not process_alive(pid), "the runtime process to be gone")
    # Repeated force stops are accepted.
    assert stack.post(name, "stop", force="true").status_code == 202
    assert stack.post(name, "stop").status_code == 202
    assert stack.get(name, "status")["deployment_status"] == "Stopped"


def test_start_paused(stack: Stack, name: str) -> None:
    stack.create(name)
    p = stack.start(name, initial="paused")
    assert (p["deployment_initial"], p["deployment_desired_status"]) == ("Paused", "Paused")
    assert stack.post(name, "resume").status_code == 202
    stack.wait_status(name, "Running")
    stack.force_stop(name)


def test_unsupported_initial_is_405(stack: Stack, name: str) -> None:
    stack.create(name)
    body = assert_error(
        stack.post(name, "start", initial="suspended"), 405, "UnsupportedPipelineAction"
    )
    assert body["details"]["action"] == "start"
    assert stack.get(name, "status")["deployment_desired_status"] == "Stopped"


def test_pause_resume_need_a_deployed_pipeline(stack: Stack, name: str) -> None:
    stack.create(name)
    for action in ("pause", "resume"):
        r = stack.post(name, action)
        body = assert_error(r, 503, "PipelineInteractionNotDeployed")
        assert r.headers["retry-after"] == "5"
        assert body["details"] == {
            "pipeline_name": name,
            "status": "Stopped",
            "desired_status": "Stopped",
        }


def test_stop_default_on_a_stopped_pipeline_is_accepted(stack: Stack, name: str) -> None:
    stack.create(name)
    assert stack.post(name, "stop").status_code == 202
    assert stack.get(name, "status")["deployment_status"] == "Stopped"


def test_runtime_death_is_recorded_and_dismissed(stack: Stack, name: str) -> None:
    import os
    import signal

    stack.create(name)
    stack.start(name)
    pid = stack.runtime_info(name)["pid"]
    os.kill(pid, signal.SIGKILL)
    p = stack.wait_status(name, "Stopped")
    error = p["deployment_error"]
    assert error["error_code"] == "RuntimeExitedUnexpectedly"
    assert "signal 9" in error["message"]
    assert p["deployment_desired_status"] == "Stopped"
    assert_error(
        stack.post(name, "start", dismiss_error="false"),
        400,
        "CannotStartWithUndismissedError",
        None,
    )
    assert stack.post(name, "dismiss_error").status_code == 200
    assert stack.get(name, "status")["deployment_error"] is None
    stack.start(name)
    stack.force_stop(name)


def test_start_dismisses_errors_by_default(stack: Stack, name: str) -> None:
    import os
    import signal

    stack.create(name)
    stack.start(name)
    os.kill(stack.runtime_info(name)["pid"], signal.SIGKILL)
    assert stack.wait_status(name, "Stopped")["deployment_error"] is not None
    stack.start(name)  # dismiss_error defaults to true, as in Feldera
    assert stack.get(name, "status")["deployment_error"] is None
    stack.force_stop(name)


def test_delete_and_clear_preconditions(stack: Stack, name: str) -> None:
    pipeline_id = stack.create(name)["id"]
    stack.start(name)
    assert_error(
        stack.rest.delete(f"/v0/pipelines/{name}"), 400, "DeleteRestrictedToFullyStopped", None
    )
    body = assert_error(stack.post(name, "clear"), 400, "StorageStatusImmutableUnlessStopped")
    assert body["details"] == {
        "resources_status": "Provisioned",
        "resources_desired_status": "Provisioned",
        "current_status": "InUse",
        "new_status": "Clearing",
    }
    stack.force_stop(name)
    assert_error(
        stack.rest.delete(f"/v0/pipelines/{name}"), 400, "DeleteRestrictedToClearedStorage", None
    )
    assert stack.post(name, "clear").status_code == 202
    wait_until(lambda: stack.get(name, "status")["storage_status"] == "Cleared", "cleared")
    assert stack.post(name, "clear").status_code == 202  # repeated: fine
    r = stack.rest.delete(f"/v0/pipelines/{name}")
    assert r.status_code == 200
    assert_error(stack.rest.get(f"/v0/pipelines/{name}"), 404, "UnknownPipelineName")
    assert not (stack.data_dir / "pipelines" / pipeline_id).exists()
