"""The runtime's fence: it obeys no owner older than the newest it has seen.

Calls may carry their owner's lease epoch (contract/fencing.py). The fence
keeps the highest one seen, in the run directory's `epoch` file as well as
in memory: a raise is on disk before the call that brought it is handled,
so a runtime started anew in the same run directory (its spec may hold an
older epoch) still refuses what this one refused. A lower epoch is refused;
WatchStatus streams opened with a lower one end (`unless_superseded`), so a
stale owner stops hearing reports as well as being obeyed.

Only SetDesiredStatus must carry an epoch: the owner's actor sends it. Data
calls may come without one (any replica relays users' calls) and are then
not fenced.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from stopcock.contract import error_codec
from stopcock.contract.fencing import (
    EPOCH_FILE,
    EPOCH_METADATA,
    STALE_OWNER,
    STALE_OWNER_HTTP_STATUS,
    parse_epoch,
    stale_message,
)
from stopcock.grpc_handlers import Handler, refusing

T = TypeVar("T")
SET_DESIRED_STATUS = "/stopcock.internal.v1.RuntimeService/SetDesiredStatus"


class StaleOwner(Exception):
    def __init__(self, epoch: int, highest: int) -> None:
        super().__init__(stale_message(epoch, highest))
        self.body = error_codec.ErrorBody(
            STALE_OWNER_HTTP_STATUS,
            STALE_OWNER,
            stale_message(epoch, highest),
            {"epoch": epoch, "highest_epoch": highest},
        )


def presented_epoch(metadata: Iterable[tuple[str, str | bytes]] | None) -> int | None:
    """The call's epoch; None without one; ValueError if malformed or given twice."""
    values = [value for key, value in metadata or () if key == EPOCH_METADATA]
    if len(values) > 1:
        raise ValueError(f"{EPOCH_METADATA} given {len(values)} times")
    return parse_epoch(values[0]) if values else None


def write_epoch(run_dir: Path, epoch: int) -> None:
    """Records `epoch` durably: the file is whole and on disk, old or new, at any crash."""
    path = run_dir / EPOCH_FILE
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover tmp file keeps its mode through O_TRUNC
        os.write(fd, f"{epoch}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # the rename itself
    finally:
        os.close(dir_fd)


class Fence:
    def __init__(self, run_dir: Path, highest: int) -> None:
        self._run_dir = run_dir
        self._highest = highest
        # Set (and replaced) on every raise: wakes the streams that wait on it.
        self._raised = asyncio.Event()

    @classmethod
    def load(cls, run_dir: Path, spec_epoch: int) -> Fence:
        """The fence at start: the higher of the spec's epoch and the recorded one.

        A bad `epoch` file raises ValueError: starting unfenced could obey
        the stale owner it was written to refuse.
        """
        if type(spec_epoch) is not int or spec_epoch < 0:
            raise ValueError(f"bad epoch in the runtime spec: {spec_epoch!r}")
        try:
            recorded = parse_epoch((run_dir / EPOCH_FILE).read_text().strip())
        except FileNotFoundError:
            recorded = 0
        return cls(run_dir, max(spec_epoch, recorded))

    @property
    def highest(self) -> int:
        return self._highest

    def admit(self, epoch: int) -> None:
        """Raises StaleOwner below the highest epoch; records a higher one first.

        Synchronous on purpose: a raise is rare (once per change of owner),
        and no await between the check and the update means no other call
        can slip in between. OSError if it cannot be recorded.
        """
        if epoch < self._highest:
            raise StaleOwner(epoch, self._highest)
        if epoch > self._highest:
            write_epoch(self._run_dir, epoch)
            self._highest = epoch
            self._raised.set()
            self._raised = asyncio.Event()

    async def superseded(self, epoch: int) -> None:
        """Returns once an epoch above `epoch` is recorded."""
        while self._highest <= epoch:
            await self._raised.wait()

    async def unless_superseded(self, opened: int | None, work: Awaitable[T]) -> T:
        """`work`'s result, or StaleOwner if an epoch above `opened` comes first."""
        if opened is None:
            return await work
        task = asyncio.ensure_future(work)
        stale = asyncio.ensure_future(self.superseded(opened))
        try:
            done, _ = await asyncio.wait((task, stale), return_when=asyncio.FIRST_COMPLETED)
        finally:
            task.cancel()  # no-ops on the one that is done
            stale.cancel()
        if stale in done:
            raise StaleOwner(opened, self._highest)
        return task.result()

    async def screen(self, details: grpc.HandlerCallDetails, handler: Handler) -> Handler:
        """`handler`, or one that refuses the call for its epoch (see TokenCheck's `then`)."""
        metadata: Any = details.invocation_metadata  # (key, value) pairs in grpc.aio
        try:
            epoch = presented_epoch(metadata)
        except ValueError as exc:
            return refusing(handler, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if epoch is None:
            if details.method == SET_DESIRED_STATUS:
                return refusing(
                    handler,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"SetDesiredStatus needs the owner's epoch in {EPOCH_METADATA}",
                )
            return handler
        try:
            self.admit(epoch)
        except StaleOwner as exc:
            return refusing(
                handler, grpc.StatusCode.ABORTED, exc.body.message, error_codec.encode(exc.body)
            )
        except OSError as exc:
            # Not recorded, so not obeyed: a restart would forget the raise.
            return refusing(
                handler, grpc.StatusCode.UNAVAILABLE, f"cannot record owner epoch {epoch}: {exc}"
            )
        return handler
