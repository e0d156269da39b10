"""IdleCollector: CPython's full garbage collections, moved to moments without calls.

CPython runs a full (generation 2) collection once the objects that reached
the old generation have grown by a quarter, and it stops the whole process
for a time that grows with every tracked object: ~100 ms with 1,000
pipelines (some 150,000 objects) on a small machine. After a bulk change
(500 pipelines started together) that collection falls on whatever request
comes next, measured as a GetPipeline p99 of 90 ms instead of 9.

So once a second this task looks: if no call started during the last second
and the young generations were collected at least `min_young` times since
the last full collection (a sign that the old generation grew), it runs the
full collection itself. CPython then has nothing pending and does not run
one again until the old generation grows by another quarter. A manager with
nothing to do allocates nothing, so it is never collected for nothing; the
check itself is one timer for the whole manager, whatever the number of
pipelines.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("stopcock.manager")

PERIOD_SECS = 1.0
MIN_YOUNG = 10  # generation-1 collections since the last full one


class IdleCollector:
    def __init__(
        self,
        calls_started: Callable[[], int],
        period: float = PERIOD_SECS,
        min_young: int = MIN_YOUNG,
    ) -> None:
        """`calls_started`: a count of calls started, ever (RequestInterceptor.calls)."""
        self._calls_started = calls_started
        self._period = period
        self._min_young = min_young
        self._task: asyncio.Task[None] | None = None
        self.collections = 0  # full collections this collector ran
        self._calls = calls_started()
        # (generation-1, generation-2) collection counts at the last full collection.
        self._marks: tuple[int, int] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            self.check()

    def check(self) -> bool:
        """One look (see the module doc); True if it ran a full collection."""
        young, full = _young_and_full()
        if self._marks is None or full != self._marks[1]:  # first look, or CPython ran one
            self._marks = (young, full)
        calls = self._calls_started()
        quiet, self._calls = calls == self._calls, calls
        if not quiet or young - self._marks[0] < self._min_young:
            return False
        started = time.perf_counter()
        found = gc.collect()
        self.collections += 1
        self._marks = _young_and_full()
        log.debug(
            "full garbage collection while idle: %.1f ms, %d unreachable",
            (time.perf_counter() - started) * 1000,
            found,
        )
        return True


def _young_and_full() -> tuple[int, int]:
    """How many generation-1 and generation-2 collections ran so far."""
    stats = gc.get_stats()
    return int(stats[1]["collections"]), int(stats[2]["collections"])
