"""Replica: this manager as one of several sharing a PostgreSQL database.

Three loops keep it in step with the others:
  * heartbeats, every ttl/6: the replica's row lives `ttl` seconds past each
    one by the database's clock. Its own deadline counts from when the
    heartbeat was *sent* (so it passes first) less MARGIN_SECS; past it, every
    lease of this replica is invalid at once (actors check before acting),
    and the replica stops its actors and registers anew under a new id. So a
    replica cut off from the database, or frozen, has stopped acting before
    any other can claim its pipelines, and never comes back as their owner.
  * notifications (LISTEN): every write notifies "<id> <version>"; the owner
    wakes the actor, watchers wake, a pipeline with work and no live owner
    is claimed. A reconnect re-syncs (notifications are lost meanwhile).
  * re-sync, every CLAIM_EVERY_SECS or when kicked: claims pipelines with work
    whose owner is gone (store/leases.py), and wakes owned ones with work
    but no actor.

A graceful shutdown stops the actors, then releases every lease and
notifies: another replica claims them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid

from stopcock.manager.control.ownership import Lease
from stopcock.manager.control.shared_records import DELETED, SharedRecords
from stopcock.manager.control.supervisor import Supervisor
from stopcock.manager.observability import LEASE_CLAIMS, LEASE_LAPSES
from stopcock.manager.store import Fence, SharedStore, StoreError

log = logging.getLogger("stopcock.replica")

MARGIN_SECS = 0.5  # the replica's deadline comes this long before its row expires
CLAIM_EVERY_SECS = 0.5
CLAIM_BATCH = 64
STATUSES_EVERY_SECS = 5.0
RECONNECT_SECS = 0.5


class Replica:
    """The `Ownership` of a replica: leases claimed from the shared store."""

    def __init__(self, store: SharedStore, records: SharedRecords, ttl: float) -> None:
        if ttl <= 2 * MARGIN_SECS:
            raise ValueError(f"lease TTL {ttl}s is too short (more than {2 * MARGIN_SECS}s)")
        self._store = store
        self._records = records
        self._ttl = ttl
        self._supervisor: Supervisor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.id = ""
        self._deadline = 0.0  # loop time
        self._leases: dict[str, Lease] = {}
        self._kick = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    # -- Ownership -----------------------------------------------------

    def lease(self, pipeline_id: str) -> Lease | None:
        lease = self._leases.get(pipeline_id)
        return lease if lease is not None and lease.valid() else None

    def lost(self, pipeline_id: str) -> None:
        lease = self._leases.pop(pipeline_id, None)
        if lease is not None:
            lease.revoked = True
        self._kick.set()  # it may need work still: whoever owns it now, or a claim

    def alive(self) -> bool:
        loop = self._loop
        return loop is not None and loop.time() < self._deadline and not self._closing

    # -- life ----------------------------------------------------------

    async def start(self, supervisor: Supervisor) -> None:
        """Registers (the database must answer), then runs the loops."""
        self._supervisor = supervisor
        self._loop = asyncio.get_running_loop()
        await self._register()
        self._tasks = [
            asyncio.create_task(self._heartbeats(), name="replica-heartbeats"),
            asyncio.create_task(self._notifications(), name="replica-notifications"),
            asyncio.create_task(self._resyncs(), name="replica-resyncs"),
        ]

    async def close(self) -> None:
        """Hands every pipeline over: actors stopped first, then leases released."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for lease in self._leases.values():
            lease.revoked = True
        if self._supervisor is not None:
            await self._supervisor.close()
        try:
            await self._store.release(self.id)
            log.info("replica %s: leases released", self.id)
        except StoreError as exc:
            log.warning("replica %s: could not release its leases (%s); they expire", self.id, exc)

    async def _register(self) -> None:
        self.id = f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}"
        assert self._loop is not None
        sent = self._loop.time()
        await self._store.register(self.id, self._ttl)
        self._deadline = sent + self._ttl - MARGIN_SECS
        log.info("replica %s registered (lease TTL %.1fs)", self.id, self._ttl)

    # -- heartbeats ----------------------------------------------------

    async def _heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._ttl / 6)  # a period, not a wait for an event
            sent = loop.time()
            try:
                alive = await asyncio.wait_for(
                    self._store.heartbeat(self.id, self._ttl),
                    max(0.05, self._deadline - sent),
                )
            except (StoreError, TimeoutError) as exc:
                log.warning("replica %s: heartbeat failed: %s", self.id, exc)
                alive = True  # not known to be dead yet: the deadline decides
                if loop.time() < self._deadline:
                    continue
            if alive and loop.time() < self._deadline:
                self._deadline = sent + self._ttl - MARGIN_SECS
                continue
            await self._lapse()

    async def _lapse(self) -> None:
        """Past the deadline: every lease is gone; start over as a new replica."""
        LEASE_LAPSES.inc()
        log.error(
            "replica %s: lease lapsed (no heartbeat within %.1fs); stopping %d actors",
            self.id,
            self._ttl - MARGIN_SECS,
            len(self._leases),
        )
        for lease in self._leases.values():
            lease.revoked = True
        self._leases.clear()
        assert self._supervisor is not None
        await self._supervisor.stop_all()
        while True:
            try:
                await self._register()
                break
            except StoreError as exc:
                log.warning("replica: cannot register again yet: %s", exc)
                await asyncio.sleep(RECONNECT_SECS)
        self._kick.set()

    # -- notifications -------------------------------------------------

    async def _notifications(self) -> None:
        while True:
            try:
                async for payload in self._store.notifications():
                    await self._heard(payload)
            except StoreError as exc:
                log.warning("replica %s: notifications broke (%s); reconnecting", self.id, exc)
            await asyncio.sleep(RECONNECT_SECS)

    async def _heard(self, payload: str) -> None:
        what, _, arg = payload.partition(" ")
        if what in ("listening", "released"):
            # (Re)connected, or a replica handed its pipelines over: look now.
            self._kick.set()
            await self._records.resync()
            return
        version = DELETED if arg == "deleted" else int(arg or 0)
        await self._records.changed(what, version)
        assert self._supervisor is not None
        if what in self._leases:
            self._supervisor.poke(what)
        elif version != DELETED:
            self._kick.set()  # maybe work for nobody: claim

    # -- re-sync -------------------------------------------------------

    async def _resyncs(self) -> None:
        loop = asyncio.get_running_loop()
        next_statuses = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), CLAIM_EVERY_SECS)
            self._kick.clear()
            if not self.alive():
                continue
            try:
                await self._claim_and_wake()
                if loop.time() >= next_statuses:
                    await self._records.refresh_statuses()
                    next_statuses = loop.time() + STATUSES_EVERY_SECS
            except StoreError as exc:
                log.warning("replica %s: re-sync failed: %s", self.id, exc)

    async def _claim_and_wake(self) -> None:
        assert self._supervisor is not None
        replica = self.id
        claimed = await self._store.claim(replica, CLAIM_BATCH)
        if replica != self.id or not self.alive():
            return  # lapsed meanwhile: those claims are void (their epochs fence them)
        for pipeline_id, epoch in claimed:
            LEASE_CLAIMS.inc()
            log.info("replica %s: claimed pipeline %s (epoch %d)", replica, pipeline_id, epoch)
            self._leases[pipeline_id] = Lease(pipeline_id, Fence(replica, epoch), self.alive)
            self._supervisor.poke(pipeline_id)
        if len(claimed) == CLAIM_BATCH:
            self._kick.set()  # more may be waiting
        for pipeline_id in await self._store.owned_with_work(replica):
            if pipeline_id in self._leases and not self._supervisor.has_actor(pipeline_id):
                self._supervisor.poke(pipeline_id)
