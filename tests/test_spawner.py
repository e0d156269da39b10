"""The warm template runtimes are forked from (stopcock.runtime.template), and its cold fallback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import Stack, process_alive, running_stack, wait_until

pytestmark = pytest.mark.e2e


def ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads line for pid {pid}")


def start_all(stack: Stack, *names: str) -> None:
    """Starts the pipelines at once: their spawns run concurrently in the manager."""
    for name in names:
        assert stack.post(name, "start").status_code == 202
    for name in names:
        stack.wait_status(name, "Running")


def killed_by_sigkill(stack: Stack, name: str) -> None:
    pid = stack.runtime_info(name)["pid"]
    os.kill(pid, signal.SIGKILL)
    p = stack.wait_status(name, "Stopped")
    error = p["deployment_error"]
    assert error["error_code"] == "RuntimeExitedUnexpectedly"
    assert "killed by signal 9 (SIGKILL)" in error["message"], error


def test_runtimes_are_forked_from_one_template_that_outlives_the_manager(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        for name in ("a", "b", "c"):
            stack.create(name)
        start_all(stack, "a", "b")
        [template] = stack.template_pids()  # two concurrent first spawns, one template
        # Forked before any thread or gRPC core existed, and still without one.
        assert threads(template) == 1
        pids = {n: stack.runtime_info(n)["pid"] for n in ("a", "b")}
        assert {ppid(pid) for pid in pids.values()} == {template}
        assert sorted(stack.runtime_pids()) == sorted(pids.values())  # the template is not one

        stack.kill_manager()
        assert process_alive(template)
        stack.start_manager()
        for name, pid in pids.items():
            stack.wait_status(name, "Running")
            assert stack.runtime_info(name)["pid"] == pid  # re-adopted
        stack.start("c")
        assert ppid(stack.runtime_info("c")["pid"]) == template  # the same template serves on
        assert stack.template_pids() == [template]

        stack.force_stop("a")
        wait_until(lambda: not process_alive(pids["a"]), "the re-adopted runtime to stop")
        assert stack.ids("b") == []  # the other one still answers


def test_a_killed_template_is_replaced_and_its_runtimes_live_on(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        for name in ("old", "new"):
            stack.create(name)
        stack.start("old")
        [template] = stack.template_pids()
        orphan = stack.runtime_info("old")["pid"]
        os.kill(template, signal.SIGKILL)
        wait_until(lambda: not process_alive(template), "the template to die")

        stack.start("new")  # a new template comes back
        [replacement] = stack.template_pids()
        assert replacement != template
        assert ppid(stack.runtime_info("new")["pid"]) == replacement
        assert process_alive(orphan)
        assert stack.get("old", "status")["deployment_status"] == "Running"

        # The dead template's runtime is still re-adopted and stopped.
        stack.kill_manager()
        stack.start_manager()
        stack.wait_status("old", "Running")
        assert stack.runtime_info("old")["pid"] == orphan
        stack.force_stop("old")
        wait_until(lambda: not process_alive(orphan), "the orphaned runtime to stop")
        assert stack.get("old", "status")["deployment_error"] is None


def test_a_forked_runtime_killed_is_reported_with_its_signal(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        stack.create("p")
        stack.start("p")
        killed_by_sigkill(stack, "p")  # from exit.json: the manager is not its parent
        stack.start("p")  # and it starts again, forked anew
        [template] = stack.template_pids()
        assert ppid(stack.runtime_info("p")["pid"]) == template


def test_a_forked_stray_is_recognised_by_its_working_directory(tmp_path: Path) -> None:
    """A forked runtime has the template's argv: only its cwd names its run directory."""
    with running_stack(tmp_path) as stack:
        stack.create("p")
        stack.start("p")
        recorded = stack.runtime_info("p")["pid"]
        pipeline_id = stack.get("p")["id"]
        run_dir = stack.data_dir / "pipelines" / pipeline_id / "run"
        stack.kill_manager()
        stray = subprocess.Popen(
            [sys.executable, "-c", "import signal; signal.pause()", "stopcock.runtime.template"],
            cwd=run_dir,
            start_new_session=True,
        )
        try:
            stack.start_manager()
            stack.wait_status("p", "Running")
            assert stray.wait(timeout=30) == -signal.SIGKILL  # stopped by the new manager
            assert stack.runtime_pids("p") == [recorded]
            assert len(stack.template_pids()) == 1  # the template is never taken for a stray
        finally:
            stray.kill()
            stray.wait()


def test_the_cold_spawner_still_works(tmp_path: Path) -> None:
    with running_stack(tmp_path, {"STOPCOCK_SPAWNER": "cold"}) as stack:
        stack.create("p")
        stack.start("p")
        pid = stack.runtime_info("p")["pid"]
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"stopcock.runtime.main" in argv
        assert stack.template_pids() == []
        killed_by_sigkill(stack, "p")  # the manager's own child: waitpid


# What a template of another Stopcock looks like from the socket: it holds the
# lock, listens, and greets with another protocol (and would fork nothing).
FOREIGN_TEMPLATE = """
import fcntl, json, os, socket, sys
path = sys.argv[1]
lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(lock, fcntl.LOCK_EX)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
listener.bind(path)
listener.listen()
print("ready", flush=True)
while True:
    conn, _ = listener.accept()
    conn.send(json.dumps({"protocol": 0, "python": "", "build": "", "pid": os.getpid()}).encode())
    conn.close()
"""


def test_a_template_of_another_stopcock_is_replaced(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        stack.create("p")
        with subprocess.Popen(
            [sys.executable, "-c", FOREIGN_TEMPLATE, str(stack.template_socket)],
            stdout=subprocess.PIPE,
            start_new_session=True,
        ) as foreign:
            try:
                assert foreign.stdout is not None
                assert foreign.stdout.readline() == b"ready\n"
                stack.start("p")
                assert foreign.wait(timeout=30) == -signal.SIGKILL  # replaced, not obeyed
                [template] = stack.template_pids()
                assert ppid(stack.runtime_info("p")["pid"]) == template
            finally:
                foreign.kill()
