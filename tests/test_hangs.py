"""A hung (stopped) runtime is found without pinging idle ones (control/hangs.py).

The template is the parent of the runtimes it forks, so the kernel tells it
when one stops or continues; the manager hears it on the template's socket.
Runtimes no template watches (cold ones, or orphans of a dead template) are
pinged instead. `stopcock_runtimes_watched{by=...}` shows which way each is
watched; the pipeline shows Unavailable while its runtime is stopped either way.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support import Stack, process_alive, running_stack, wait_until

pytestmark = pytest.mark.e2e


def watched(stack: Stack) -> dict[str, float]:
    """The manager's stopcock_runtimes_watched gauge, by label."""
    text = httpx.get(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5).text
    found = re.findall(r'^stopcock_runtimes_watched\{by="(\w+)"\} (\S+)$', text, re.MULTILINE)
    return {by: float(value) for by, value in found}


def watched_by(stack: Stack, by: str, count: int) -> None:
    wait_until(
        lambda: watched(stack).get(by, 0) == count and sum(watched(stack).values()) == count,
        f"{count} runtimes watched by {by}",
    )


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def hang_is_seen(stack: Stack, name: str) -> None:
    """Stops the runtime: Unavailable, saying why; continues it: Running again, same process."""
    pid = stack.runtime_info(name)["pid"]
    with stopped(pid):
        p = stack.wait_status(name, "Unavailable")
        details = p["deployment_runtime_status_details"] or {}
        assert "does not answer" in details.get("unreachable", ""), details
    p = stack.wait_status(name, "Running")
    assert stack.runtime_info(name)["pid"] == pid
    assert p["deployment_error"] is None


def test_a_forked_runtime_is_watched_by_its_template_not_pinged(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        for name in ("a", "b"):
            stack.create(name)
            stack.start(name)
        watched_by(stack, "template", 2)
        hang_is_seen(stack, "a")
        assert stack.get("b", "status")["deployment_status"] == "Running"
        watched_by(stack, "template", 2)
        stack.force_stop("a")
        watched_by(stack, "template", 1)


def test_a_runtime_stopped_while_no_manager_ran_is_seen_at_restart(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        stack.create("p")
        stack.start("p")
        pid = stack.runtime_info("p")["pid"]
        stack.kill_manager()
        with stopped(pid):
            stack.start_manager()
            stack.wait_status("p", "Unavailable")  # from the template's snapshot
            watched_by(stack, "template", 1)
        p = stack.wait_status("p", "Running")
        assert stack.runtime_info("p")["pid"] == pid  # re-adopted, not replaced
        assert p["deployment_error"] is None


def test_orphans_of_a_dead_template_are_pinged_instead(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        stack.create("p")
        stack.start("p")
        watched_by(stack, "template", 1)
        [template] = stack.template_pids()
        os.kill(template, signal.SIGKILL)
        wait_until(lambda: not process_alive(template), "the template to die")
        watched_by(stack, "pings", 1)
        hang_is_seen(stack, "p")

        # A new template watches what it forks; the orphan stays pinged.
        stack.create("q")
        stack.start("q")
        wait_until(
            lambda: watched(stack) == {"template": 1.0, "pings": 1.0},
            "one runtime watched each way",
        )
        hang_is_seen(stack, "q")


def test_cold_runtimes_are_pinged(tmp_path: Path) -> None:
    with running_stack(tmp_path, {"STOPCOCK_SPAWNER": "cold"}) as stack:
        stack.create("p")
        stack.start("p")
        watched_by(stack, "pings", 1)
        hang_is_seen(stack, "p")
