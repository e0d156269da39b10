"""Fixtures: real stacks (manager + Envoy + runtime processes) on free ports.

Also the test tiers (see `e2e` in pyproject.toml): the guard below keeps every
test not marked `e2e` from starting a process, so `make unit` stays fast and
self-contained and a missing mark cannot go unnoticed.
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.postgres import EmbeddedPostgres
from tests.support import Stack, running_stack

# pytester: tests/test_tiers.py collects small test files to check the tier checks.
pytest_plugins = ["pytester"]

_names = itertools.count(1)

# -- test tiers ----------------------------------------------------------------
#
# Every test that starts a process (a manager, Envoy, a runtime, the CLI, node,
# grpcurl...) is marked `e2e`, in its module (`pytestmark` when the whole module
# is), where a reader sees it; nothing marks tests behind their back. Two checks
# keep the marks honest, in every run (`make test` as well as `make unit`), with
# no list of helpers or modules that could go stale:
#
# * An audit hook refuses every way Python starts a process (subprocess, asyncio
#   subprocesses, os.posix_spawn, fork, exec, system) while a test that is not
#   marked `e2e` is set up, run or torn down: such a test fails, naming the
#   mark, whatever helper it went through. Audit hooks cannot be removed, so
#   the hook checks a flag that only the hook wrapper below sets.
# * The guard cannot see a shared fixture that an e2e test started earlier in
#   the session (the session-wide `stack`, or `postgres`, the PostgreSQL
#   server): an unmarked test using it would start nothing itself and pass in
#   a full run. So collection fails for an unmarked test that requests one of
#   E2E_FIXTURES, directly or through another fixture. (A module-scoped stack
#   fixture lives in a module marked e2e as a whole; a new unmarked user of one
#   still fails `make unit`, where no e2e test starts it first.)

E2E_FIXTURES = frozenset(
    {"stack", "sqlite_stack", "replicated_stack", "own_stack", "postgres", "postgres_url"}
)
# The audit events of CPython 3.11 that start a process (asyncio and
# multiprocessing go through subprocess.Popen, os.fork or os.posix_spawn).
_SPAWN_EVENTS = frozenset(
    {
        "subprocess.Popen",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "os.exec",
        "os.system",
    }
)


class ProcessInUnitTest(BaseException):
    """A test not marked e2e started a process.

    A BaseException, so that a test's `except Exception` cannot swallow it.
    """


class _Guard:
    unit_test: str | None = None  # the node id of the unmarked test being run, if any
    refused: list[str] = []  # what the guard refused during that test


def _refuse_processes(event: str, args: tuple[Any, ...]) -> None:
    if _Guard.unit_test is not None and event in _SPAWN_EVENTS:
        what = f"{event} {args[:2]!r}"
        _Guard.refused.append(what)
        raise ProcessInUnitTest(
            f"{_Guard.unit_test} started a process ({what}) but is not marked e2e: "
            "mark it @pytest.mark.e2e (or the module, pytestmark = pytest.mark.e2e)"
        )


sys.addaudithook(_refuse_processes)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    _Guard.unit_test = None if item.get_closest_marker("e2e") else item.nodeid
    _Guard.refused.clear()
    try:
        return (yield)
    finally:
        _Guard.unit_test = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    result = yield
    if _Guard.refused:  # the test caught the refusal (`except BaseException`): fail it anyway
        pytest.fail(f"{item.nodeid} is not marked e2e and started processes: {_Guard.refused}")
    return result


def unmarked_stack_users(items: list[pytest.Item]) -> list[str]:
    """The tests among `items` that use a stack fixture but are not marked e2e."""
    found = []
    for item in items:
        # Only a pytest.Function has fixtures (any other kind of item has none).
        used = E2E_FIXTURES & set(getattr(item, "fixturenames", ()))
        if used and not item.get_closest_marker("e2e"):
            found.append(f"{item.nodeid} (uses {', '.join(sorted(used))})")
    return found


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if unmarked := unmarked_stack_users(items):
        raise pytest.UsageError(
            "tests that use a stack fixture must be marked e2e:\n  " + "\n  ".join(unmarked)
        )


_MODULE_MARKED_E2E = re.compile(r"^pytestmark = .*\bpytest\.mark\.e2e\b", re.MULTILINE)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under `-m "not e2e"` (make unit), does not even import the modules marked e2e as a whole.

    Only a saving (their imports, such as the Feldera SDK, take a third of a unit
    run): a module this scan misses is imported and its tests deselected as usual.
    """
    if config.getoption("markexpr") != "not e2e" or not collection_path.match("test_*.py"):
        return None
    return bool(_MODULE_MARKED_E2E.search(collection_path.read_text())) or None


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One shared stack for tests that only need a healthy Stopcock (SQLite, the default)."""
    with running_stack(tmp_path_factory.mktemp("stack")) as s:
        yield s


@pytest.fixture(scope="session")
def replicated_stack(
    tmp_path_factory: pytest.TempPathFactory, postgres: EmbeddedPostgres
) -> Iterator[Stack]:
    """One shared stack of two replicas on PostgreSQL behind one Envoy."""
    env = {"STOPCOCK_DATABASE_URL": postgres.new_database()}
    with running_stack(tmp_path_factory.mktemp("replicated"), env, replicas=2) as s:
        yield s


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Stack:
    """The shared SQLite stack; in modules marked `both_stores`, each test runs on both
    (the lifecycle suite: everything that passes on SQLite passes on replicas)."""
    store = getattr(request, "param", "sqlite")
    found: Stack = request.getfixturevalue(f"{store}_stack".replace("postgres", "replicated"))
    return found


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "stack" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_stores"):
        metafunc.parametrize("stack", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A pipeline name unique in the session (tests share the stack)."""
    base = request.node.name.split("[")[0].replace("test_", "")[:40].replace("_", "-")
    return f"{base}-{next(_names)}".strip("-")


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Stack]:
    """A private stack, for tests that kill processes or inject faults."""
    with running_stack(tmp_path) as s:
        yield s


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    """One real PostgreSQL server for the session (tests/postgres.py); it fails, never skips."""
    server = EmbeddedPostgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres: EmbeddedPostgres) -> str:
    """The URL of a fresh, empty database of its own on the session's server."""
    return postgres.new_database()
