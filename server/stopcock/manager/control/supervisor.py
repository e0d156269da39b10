"""The actors: one per pipeline that has work, started by a poke, restarted if it crashes.

An actor's state is all in its record (and its runtime process), so an actor
that crashed is simply started again; one that has nothing left to do exits,
and the next poke starts a new one. Idle pipelines cost nothing. Only
pipelines this manager holds a lease on get an actor (control/ownership.py);
an actor that found its lease lost ends for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from stopcock.manager.control.actor import PipelineActor
from stopcock.manager.control.ownership import Ownership
from stopcock.manager.control.records import PipelineRecords
from stopcock.manager.control.runner import LocalProcessRunner
from stopcock.manager.control.runtime_client import RuntimeClient
from stopcock.manager.domain.model import PipelineRecord
from stopcock.manager.store import Fenced

log = logging.getLogger("stopcock.lifecycle")

RESTART_DELAY = 0.5  # seconds before a crashed actor is started again


class Supervisor:
    def __init__(
        self,
        records: PipelineRecords,
        runner: LocalProcessRunner,
        ownership: Ownership,
        compile_program: Callable[[PipelineRecord], None],
    ) -> None:
        self._records = records
        self._runner = runner
        self._ownership = ownership
        self._compile = compile_program
        self._actors: dict[str, tuple[PipelineActor, asyncio.Task[None]]] = {}
        self._closing = False

    def poke(self, pipeline_id: str) -> None:
        """Wakes the pipeline's actor, starting one if this manager holds its lease."""
        if self._closing:
            return
        entry = self._actors.get(pipeline_id)
        if entry is not None and not entry[1].done():
            entry[0].poke()
            return
        lease = self._ownership.lease(pipeline_id)
        if lease is None:
            return  # another replica's (its coordinator hears of the change)
        actor = PipelineActor(pipeline_id, self._records, self._runner, lease, self._compile)
        task = asyncio.create_task(actor.run(), name=f"actor-{pipeline_id}")
        self._actors[pipeline_id] = (actor, task)
        task.add_done_callback(lambda t: self._actor_done(pipeline_id, actor, t))

    def client(self, pipeline_id: str) -> RuntimeClient | None:
        """The pipeline's runtime client while its actor is connected to the runtime."""
        entry = self._actors.get(pipeline_id)
        return entry[0].client() if entry is not None else None

    def has_actor(self, pipeline_id: str) -> bool:
        entry = self._actors.get(pipeline_id)
        return entry is not None and not entry[1].done()

    async def close(self) -> None:
        """Stops the actors; runtime processes keep running (they are re-adopted)."""
        self._closing = True
        await self.stop_all()

    async def stop_all(self) -> None:
        """Stops every actor now (leases lost); their runtimes keep running."""
        tasks = [task for _, task in self._actors.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _actor_done(self, pipeline_id: str, actor: PipelineActor, task: asyncio.Task[None]) -> None:
        entry = self._actors.get(pipeline_id)
        if entry is not None and entry[0] is actor:
            del self._actors[pipeline_id]
        if task.cancelled() or self._closing:
            return
        if isinstance(task.exception(), Fenced):
            log.warning(
                "pipeline %s: lease lost (%s); its actor stops", pipeline_id, task.exception()
            )
            self._ownership.lost(pipeline_id)
            return
        if task.exception() is not None:
            log.error(
                "actor of pipeline %s crashed; restarting", pipeline_id, exc_info=task.exception()
            )
            asyncio.get_running_loop().call_later(RESTART_DELAY, self.poke, pipeline_id)
