"""The test tiers: tests not marked e2e start no process (tests/conftest.py checks it)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable

import pytest

from tests.conftest import ProcessInUnitTest, _Guard, unmarked_stack_users

# Each of these starts `true` and reaps it, were the guard to let it through.


def _subprocess() -> None:
    subprocess.run(["true"], check=False)


def _posix_spawn() -> None:
    os.waitpid(os.posix_spawn("/bin/true", ["true"], os.environ), 0)


def _asyncio() -> None:
    async def start() -> None:
        await (await asyncio.create_subprocess_exec("true")).wait()

    asyncio.run(start())


def _fork() -> None:
    pid = os.fork()
    if pid == 0:  # the child, only if the guard failed: leave at once
        os._exit(0)
    os.waitpid(pid, 0)


@pytest.mark.parametrize("start", [_subprocess, _posix_spawn, _asyncio, _fork])
def test_a_test_not_marked_e2e_cannot_start_a_process(start: Callable[[], None]) -> None:
    with pytest.raises(ProcessInUnitTest, match=r"is not marked e2e: mark it @pytest\.mark\.e2e"):
        start()
    # The guard also remembers the refusal, to fail a test that swallowed it:
    # forget it here, where catching it is the point.
    assert _Guard.refused
    _Guard.refused.clear()


@pytest.mark.e2e
def test_an_e2e_test_may_start_processes() -> None:
    assert subprocess.run(["true"], check=False).returncode == 0


def test_unmarked_users_of_a_stack_fixture_are_found(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "markers =\n    e2e: starts processes\n"
    )
    items = pytester.getitems(
        """
        import pytest

        @pytest.fixture
        def stack(): ...

        @pytest.fixture
        def own_stack(): ...

        @pytest.fixture
        def through(own_stack): ...

        def test_unmarked(stack): ...

        def test_unmarked_indirectly(through): ...

        @pytest.mark.e2e
        def test_marked(stack, own_stack): ...

        def test_without_a_stack(): ...
        """
    )
    assert [entry.split("::")[1] for entry in unmarked_stack_users(items)] == [
        "test_unmarked (uses stack)",
        "test_unmarked_indirectly (uses own_stack)",
    ]
