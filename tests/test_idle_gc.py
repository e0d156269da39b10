"""IdleCollector runs CPython's full collection when no call started and the old generation grew."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from stopcock.manager.idle_gc import IdleCollector


@pytest.fixture(autouse=True)
def no_automatic_collections() -> Iterator[None]:
    """Only the collections a test runs: an automatic one would shift the counts."""
    gc.disable()
    yield
    gc.enable()


def young_collections(n: int) -> None:
    for _ in range(n):
        gc.collect(1)


def test_collects_when_quiet_after_growth_and_not_otherwise() -> None:
    calls = [0]
    collector = IdleCollector(lambda: calls[0], min_young=3)
    assert not collector.check()  # first look: nothing grew since
    young_collections(3)
    calls[0] += 1  # a call started since the last look: not quiet
    assert not collector.check()
    assert collector.check()  # quiet now, and 3 young collections since the last full one
    assert collector.collections == 1
    assert not collector.check()  # nothing pending after it
    young_collections(2)
    assert not collector.check()  # not enough growth yet


def test_a_full_collection_by_cpython_resets_the_count() -> None:
    collector = IdleCollector(lambda: 0, min_young=3)
    collector.check()
    young_collections(3)
    gc.collect()  # CPython (here: someone) ran a full one meanwhile
    assert not collector.check()
    young_collections(3)
    assert collector.check()
