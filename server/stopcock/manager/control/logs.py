"""Reading a runtime's log: its last rotation, then the live file, optionally followed.

The runtime writes its stdout and stderr to run/runtime.log and rotates it
itself (stopcock.runtime.logfile): past LOG_ROTATE_BYTES, when a record is written, it becomes
runtime.log.1 and a new one starts, so at most about twice that is kept.
Following is `tail -F`: look for new bytes every FOLLOW_INTERVAL, notice a
rotation by the file's inode changing, and stop once the runtime process is
gone and everything it wrote has been sent.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

CHUNK = 64 << 10
FOLLOW_INTERVAL = 0.25  # seconds between looks at a followed log (as tail -F does)


def _read_from(path: Path, offset: int) -> tuple[bytes, int, int | None]:
    """New bytes of `path` from `offset`, the new offset, and the file's inode."""
    try:
        with open(path, "rb") as f:
            inode = os.fstat(f.fileno()).st_ino
            f.seek(offset)
            data = f.read(CHUNK)
            return data, offset + len(data), inode
    except FileNotFoundError:
        return b"", 0, None


async def read_log(
    log: Path, follow: bool, running: Callable[[], Awaitable[bool]]
) -> AsyncIterator[bytes]:
    rotated = log.with_name(log.name + ".1")
    offset = 0
    data, _, _ = await asyncio.to_thread(_read_from, rotated, 0)
    while data:
        yield data
        offset += len(data)
        data, _, _ = await asyncio.to_thread(_read_from, rotated, offset)
    offset, inode = 0, None
    while True:
        data, new_offset, new_inode = await asyncio.to_thread(_read_from, log, offset)
        if inode is not None and new_inode is not None and new_inode != inode:
            # Rotated under us: finish the old file (now .1), then start the new one.
            tail, _, _ = await asyncio.to_thread(_read_from, rotated, offset)
            if tail:
                yield tail
            offset, inode = 0, new_inode
            continue
        inode = new_inode if new_inode is not None else inode
        if data:
            offset = new_offset
            yield data
            continue
        if not follow or not await running():
            return
        await asyncio.sleep(FOLLOW_INTERVAL)
