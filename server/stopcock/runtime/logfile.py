"""The runtime's log: runtime.log, bounded by rotation when a write takes it past the limit.

The runtime's stdout and stderr are run/runtime.log (the manager or the
template set them up so). Past LOG_ROTATE_BYTES the file becomes
runtime.log.1 (one old file is kept) and fds 1 and 2 are pointed at a fresh
one, so nothing that writes to them needs to know.

The size is looked at after each log record is written, not by a timer: an
idle runtime writes nothing and so costs nothing here (a timer per runtime
woke every runtime every 2 s). Bytes written to the fds without logging (a
C library's messages) are counted at the next record.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TextIO

LOG_ROTATE_BYTES = 4 << 20  # runtime.log rotates past this; one old file is kept


class RotatingStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes records to `stream` (stderr) and rotates `path` once it is past `limit`."""

    def __init__(
        self,
        path: Path,
        limit: int = LOG_ROTATE_BYTES,
        stream: TextIO | None = None,
        fds: tuple[int, ...] = (1, 2),
    ) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self._path = path
        self._limit = limit
        self._fds = fds

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        try:
            if os.fstat(self._fds[-1]).st_size > self._limit:
                self._rotate()
        except OSError as exc:
            # Not through logging: this handler is the one failing.
            self.stream.write(f"log rotation failed: {exc}\n")

    def _rotate(self) -> None:
        self.flush()
        os.replace(self._path, self._path.with_name(self._path.name + ".1"))
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for target in self._fds:
                os.dup2(fd, target)
        finally:
            os.close(fd)
