"""Failures on the way: slow provisioning, a stop in progress, dying runtimes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import process_alive, running_stack, wait_until
from tests.test_rest_pipelines import assert_error
from tests.test_state_machine import SEED_STOPPING_BODY

pytestmark = pytest.mark.e2e


def test_start_while_stopping_answers_the_seed_body(tmp_path: Path) -> None:
    # The fault holds the kill back while the file exists: the pipeline stays in Stopping.
    kill_hold = tmp_path / "kill.hold"
    kill_hold.touch()
    with running_stack(tmp_path, {"STOPCOCK_TEST_FAULTS": f"kill_hold_file={kill_hold}"}) as stack:
        stack.create("p")
        stack.start("p")
        assert stack.post("p", "stop", force="true").status_code == 202
        stack.wait_status("p", "Stopping")
        r = stack.post("p", "start")
        assert r.status_code == 400
        assert r.json() == SEED_STOPPING_BODY
        # A force stop cannot be cancelled, but it can be repeated.
        assert stack.post("p", "stop", force="true").status_code == 202
        assert_error(stack.post("p", "pause"), 400, "InvalidTransition")
        kill_hold.unlink()
        stack.wait_status("p", "Stopped")
        stack.start("p")


def test_provisioning_timeout_and_force_stop_while_provisioning(tmp_path: Path) -> None:
    # Runtimes never get to listen: the hold file stays until they are killed.
    startup_hold = tmp_path / "startup.hold"
    startup_hold.touch()
    env = {"STOPCOCK_RUNTIME_TEST_FAULTS": f"startup_hold_file={startup_hold}"}
    with running_stack(tmp_path, env) as stack:
        # 3 s: the first start also starts the runtime template (it imports
        # everything a runtime needs, ~1 s on a busy machine), inside the timeout.
        stack.create("slow", runtime_config={"provisioning_timeout_secs": 3})
        assert stack.post("slow", "start").status_code == 202
        stack.wait_status("slow", "Provisioning")
        [pid] = wait_until(lambda: stack.runtime_pids("slow"), "a runtime process")
        p = stack.wait_status("slow", "Stopped")
        error = p["deployment_error"]
        assert error["error_code"] == "ProvisioningTimeout"
        assert error["details"] == {"provisioning_timeout_secs": 3}
        wait_until(lambda: not process_alive(pid), "the slow runtime to be killed")

        stack.create("held", runtime_config={"provisioning_timeout_secs": 600})
        assert stack.post("held", "start").status_code == 202
        stack.wait_status("held", "Provisioning")
        assert stack.post("held", "stop", force="true").status_code == 202
        p = stack.wait_status("held", "Stopped")
        assert p["deployment_error"] is None
        wait_until(lambda: not stack.runtime_pids(), "no runtime process left")


def test_an_error_can_only_be_dismissed_once_fully_stopped(tmp_path: Path) -> None:
    startup_hold, kill_hold = tmp_path / "startup.hold", tmp_path / "kill.hold"
    startup_hold.touch()  # never removed: the runtime is killed before it listens
    kill_hold.touch()
    env = {
        "STOPCOCK_RUNTIME_TEST_FAULTS": f"startup_hold_file={startup_hold}",
        "STOPCOCK_TEST_FAULTS": f"kill_hold_file={kill_hold}",
    }
    with running_stack(tmp_path, env) as stack:
        stack.create("p", runtime_config={"provisioning_timeout_secs": 1})
        assert stack.post("p", "start").status_code == 202
        p = stack.wait_status("p", "Stopping")  # the timeout hit; the kill is held back
        assert p["deployment_error"]["error_code"] == "ProvisioningTimeout"
        assert_error(
            stack.post("p", "dismiss_error"), 400, "DismissErrorRestrictedToFullyStopped", None
        )
        kill_hold.unlink()
        stack.wait_status("p", "Stopped")
        assert stack.post("p", "dismiss_error").status_code == 200
        assert stack.get("p", "status")["deployment_error"] is None
