"""The runtime's state: the pipeline's database and its status.

One `Engine` per runtime process. It owns the in-memory SQLite database the
program runs on and the status the manager watches. Every status change goes
through `_set_status`, which bumps a sequence number and wakes the watchers,
so the manager sees each change as it happens (pushed, not polled).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

from stopcock.program import load_program

log = logging.getLogger("stopcock.runtime")

INITIALIZING = "Initializing"
RUNNING = "Running"
PAUSED = "Paused"
SUSPENDED = "Suspended"
FAILED = "Failed"
DESIRABLE = (RUNNING, PAUSED, SUSPENDED)


@dataclass(frozen=True, slots=True)
class Status:
    status: str
    desired_status: str
    error: dict[str, Any] | None
    sequence: int


class DesiredStatusRefused(Exception):
    """The runtime cannot work towards the desired status asked for."""


class Engine:
    def __init__(self, *, deployment_id: str, program_code: str, initial: str) -> None:
        self.deployment_id = deployment_id
        self.incarnation_uuid = str(uuid.uuid4())
        self._program_code = program_code
        self._status = Status(INITIALIZING, initial, None, 0)
        self._changed = asyncio.Condition()
        self.db: sqlite3.Connection | None = None

    @property
    def status(self) -> Status:
        return self._status

    async def _set_status(
        self, status: str, desired: str | None = None, error: dict[str, Any] | None = None
    ) -> None:
        async with self._changed:
            old = self._status
            self._status = Status(status, desired or old.desired_status, error, old.sequence + 1)
            log.info(
                "status %s -> %s (desired %s)", old.status, status, self._status.desired_status
            )
            self._changed.notify_all()

    async def wait_for_change(self, after_sequence: int) -> Status:
        async with self._changed:
            await self._changed.wait_for(lambda: self._status.sequence > after_sequence)
            return self._status

    async def initialize(self) -> None:
        """Loads the program, then goes to the desired status."""
        try:
            db = sqlite3.connect(":memory:", check_same_thread=False)
            load_program(db, self._program_code)
            self.db = db
        except sqlite3.Error as exc:
            await self._set_status(
                FAILED,
                error={
                    "message": f"The program failed to load: {exc}",
                    "error_code": "RuntimeProgramLoadFailed",
                    "details": {"error": str(exc)},
                },
            )
            return
        await self._set_status(
            self._status.desired_status if self._status.desired_status != SUSPENDED else PAUSED
        )

    async def set_desired(self, desired: str) -> None:
        if desired not in DESIRABLE:
            raise DesiredStatusRefused(f"unknown desired status '{desired}'")
        current = self._status
        if desired == SUSPENDED:
            raise DesiredStatusRefused(
                "this runtime cannot suspend: checkpoint-based suspend is not available"
            )
        if current.status in (SUSPENDED, FAILED):
            raise DesiredStatusRefused(f"the runtime is {current.status}")
        if current.status == INITIALIZING:
            # Remember it; `initialize` goes there when the program is loaded.
            await self._set_status(INITIALIZING, desired)
            return
        if current.status != desired or current.desired_status != desired:
            await self._set_status(desired, desired)


def status_json(status: Status) -> str:
    return json.dumps(status.error) if status.error else ""
