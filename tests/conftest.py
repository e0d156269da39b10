"""Fixtures: real stacks (manager + Envoy + runtime processes) on free ports."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Stack, running_stack

_names = itertools.count(1)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One shared stack for tests that only need a healthy Stopcock."""
    with running_stack(tmp_path_factory.mktemp("stack")) as s:
        yield s


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
