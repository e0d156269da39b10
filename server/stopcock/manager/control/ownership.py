"""Which pipelines this manager may act on: its leases.

An actor acts only under a `Lease`: it checks `lease.check()` before every
pass and right before every act on a runtime process (spawn, kill), writes
with `lease.fence` (a stale owner's write changes nothing, store.Fenced),
and sends `lease.epoch` with every command to the runtime (which refuses a
lower epoch than it has seen). A lost lease ends the actor; it is never
restarted by this manager unless the lease is claimed again.

`SoleOwnership` is the embedded form: on SQLite a kernel lock makes this
manager the only one (store/sqlite.py `claim_single_manager`), so it owns
every pipeline, at epoch 0, for good. `Replica` (control/replica.py) is the
PostgreSQL form: leases claimed and kept by heartbeats.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from stopcock.manager.store import Fence, Fenced


class Lease:
    """A pipeline's lease as its owner's actor holds it."""

    def __init__(self, pipeline_id: str, fence: Fence | None, alive: Callable[[], bool]) -> None:
        self.pipeline_id = pipeline_id
        self.fence = fence  # None: the sole owner's writes need no fence
        self._alive = alive
        self.revoked = False
        # When this manager took the pipeline (time.monotonic()): no earlier
        # owner can have started a runtime for it since (runner.process_scan).
        self.granted_at = time.monotonic()

    @property
    def epoch(self) -> int:
        return 0 if self.fence is None else self.fence.epoch

    def valid(self) -> bool:
        return not self.revoked and self._alive()

    def check(self) -> None:
        """Raises store.Fenced unless this manager still holds the lease."""
        if not self.valid():
            raise Fenced(f"pipeline {self.pipeline_id}: lease epoch {self.epoch} is not held")


class Ownership(Protocol):
    def lease(self, pipeline_id: str) -> Lease | None:
        """The lease this manager holds on the pipeline, or None (another replica acts)."""
        ...

    def lost(self, pipeline_id: str) -> None:
        """An actor found its lease lost (a fenced write or command)."""
        ...


class SoleOwnership:
    """The only manager owns every pipeline."""

    def lease(self, pipeline_id: str) -> Lease:
        return Lease(pipeline_id, None, lambda: True)

    def lost(self, pipeline_id: str) -> None:
        raise AssertionError("the sole owner cannot lose a lease")
