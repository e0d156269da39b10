"""Manager crashes (SIGKILL) and restarts: nothing acknowledged is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port, process_alive, running_stack, wait_until

pytestmark = pytest.mark.e2e


def test_restart_readopts_live_runtimes_and_notices_dead_ones(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        for name in ("alive", "paused", "dies", "idle"):
            stack.create(name)
        stack.start("alive")
        stack.start("paused", initial="paused")
        stack.start("dies")
        before = {n: stack.get(n, "status") for n in ("alive", "paused")}
        pids = {n: stack.runtime_info(n)["pid"] for n in ("alive", "paused", "dies")}

        stack.kill_manager()
        os.kill(pids["dies"], signal.SIGKILL)  # dies while nobody watches
        wait_until(lambda: not process_alive(pids["dies"]), "the runtime to die")
        stack.start_manager()

        for n, status in (("alive", "Running"), ("paused", "Paused")):
            p = stack.wait_status(n, status)
            assert p["deployment_id"] == before[n]["deployment_id"]  # re-adopted, not restarted
            assert stack.runtime_info(n)["pid"] == pids[n]
            assert process_alive(pids[n])
        p = stack.wait_status("dies", "Stopped")
        assert p["deployment_error"]["error_code"] == "RuntimeExitedUnexpectedly"
        assert stack.get("idle", "status")["deployment_status"] == "Stopped"

        # The re-adopted runtimes are really under control again.
        assert stack.post("paused", "resume").status_code == 202
        stack.wait_status("paused", "Running")
        stack.force_stop("alive")
        wait_until(lambda: not process_alive(pids["alive"]), "the re-adopted runtime to stop")


def test_acknowledged_stop_is_carried_out_after_a_crash(tmp_path: Path) -> None:
    kill_hold = tmp_path / "kill.hold"
    kill_hold.touch()
    with running_stack(tmp_path, {"STOPCOCK_TEST_FAULTS": f"kill_hold_file={kill_hold}"}) as stack:
        stack.create("p")
        stack.start("p")
        pid = stack.runtime_info("p")["pid"]
        assert stack.post("p", "stop", force="true").status_code == 202
        stack.wait_status("p", "Stopping")
        stack.kill_manager()  # while the kill is held back
        kill_hold.unlink()  # the next manager's kill goes through
        stack.start_manager()
        p = stack.wait_status("p", "Stopped")
        assert p["deployment_error"] is None
        wait_until(lambda: not process_alive(pid), "the runtime to be killed")


def test_acknowledged_start_is_carried_out_after_a_crash(tmp_path: Path) -> None:
    startup_hold = tmp_path / "startup.hold"
    startup_hold.touch()
    env = {"STOPCOCK_RUNTIME_TEST_FAULTS": f"startup_hold_file={startup_hold}"}
    with running_stack(tmp_path, env) as stack:
        stack.create("p")
        assert stack.post("p", "start").status_code == 202
        stack.wait_status("p", "Provisioning")
        stack.kill_manager()  # while the runtime has not listened yet
        stack.start_manager()
        startup_hold.unlink()  # only now may a runtime listen
        stack.wait_status("p", "Running")
        assert stack.runtime_pids() == [stack.runtime_info("p")["pid"]], "one runtime, no orphan"


def test_a_runtime_of_another_protocol_is_stopped_not_adopted(tmp_path: Path) -> None:
    """As after an upgrade while pipelines ran: their runtimes speak the old protocol."""
    with running_stack(tmp_path) as stack:
        stack.create("old")
        stack.start("old")
        pid = stack.runtime_info("old")["pid"]
        spec_path = stack.data_dir / "pipelines" / stack_id(stack, "old") / "run" / "spec.json"
        stack.kill_manager()
        spec = json.loads(spec_path.read_text())
        del spec["protocol"]  # what an older Stopcock wrote
        spec_path.write_text(json.dumps(spec))
        stack.start_manager()
        p = stack.wait_status("old", "Stopped")
        assert p["deployment_error"]["error_code"] == "RuntimeExitedUnexpectedly"
        wait_until(lambda: not process_alive(pid), "the old runtime to be stopped")
        stack.start("old")  # and it starts anew, with this manager's runtime
        assert stack.runtime_info("old")["pid"] != pid


def stack_id(stack: Any, name: str) -> str:
    pipeline_id: str = stack.get(name)["id"]
    return pipeline_id


def test_a_runtime_nobody_recorded_is_stopped_on_restart(tmp_path: Path) -> None:
    """A manager that died between spawning a runtime and recording it leaves a stray."""
    with running_stack(tmp_path) as stack:
        stack.create("p")
        stack.start("p")
        recorded = stack.runtime_info("p")["pid"]
        run_dir = stack.data_dir / "pipelines" / stack_id(stack, "p") / "run"
        stack.kill_manager()
        # What such a stray looks like from outside: a runtime's command line
        # naming the pipeline's run directory (this one only sleeps).
        stray = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import signal; signal.pause()",
                "stopcock.runtime.main",
                "--run-dir",
                str(run_dir),
            ],
            start_new_session=True,
        )
        try:
            stack.start_manager()
            stack.wait_status("p", "Running")
            assert stray.wait(timeout=30) == -signal.SIGKILL  # stopped by the new manager
            assert stack.runtime_pids("p") == [recorded]  # the recorded one is kept
        finally:
            stray.kill()
            stray.wait()


def test_a_second_manager_on_the_same_sqlite_data_is_refused(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        assert stack.manager is not None
        second = subprocess.run(
            [sys.executable, "-m", "stopcock.manager.main"],
            env={
                **stack.env,
                "STOPCOCK_GRPC_PORT": str(free_port()),
                "STOPCOCK_METRICS_PORT": str(free_port()),
            },
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2
        message = second.stderr.strip()
        assert f"another Stopcock manager (pid {stack.manager.pid})" in message
        assert "STOPCOCK_DATABASE_URL" in message
        # The first one serves on, unharmed; once it is gone (even by SIGKILL,
        # which the other restart tests do), the next manager may start.
        stack.create("still-served")
