"""Checked rows of a streamed ingest, kept until the whole body has arrived.

A streamed body is applied only once all of it has arrived and every update
in it was checked, so that a bad row anywhere changes nothing and a slow
client never holds the database. Meanwhile its rows wait here: pickled (a
compact form, about the size of the JSON), in memory up to MEMORY_BYTES,
then in an unlinked temporary file in the runtime's own directory (on
disk: a 1 GB body costs disk, not memory).
"""

from __future__ import annotations

import os
import pickle
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from stopcock.runtime.data import Rows

MEMORY_BYTES = 32 << 20
_LENGTH = struct.Struct("<Q")


class Spool:
    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._memory: list[bytes] = []
        self._held = 0
        self._file: IO[bytes] | None = None
        self.rows = 0

    def add(self, rows: Rows) -> None:
        if not rows:
            return
        self.rows += len(rows)
        blob = pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)
        if self._file is None and self._held + len(blob) <= MEMORY_BYTES:
            self._memory.append(blob)
            self._held += len(blob)
            return
        if self._file is None:
            # Closed by close(), which every user calls in a `finally`.
            self._file = tempfile.TemporaryFile(dir=self._dir, prefix="ingest-")  # noqa: SIM115
        self._file.write(_LENGTH.pack(len(blob)))
        self._file.write(blob)

    def batches(self) -> Iterator[Rows]:
        """Every batch added, in order (read once)."""
        for blob in self._memory:
            yield pickle.loads(blob)
        if self._file is None:
            return
        self._file.flush()
        self._file.seek(0)
        while header := self._file.read(_LENGTH.size):
            (length,) = _LENGTH.unpack(header)
            yield pickle.loads(self._file.read(length))

    def close(self) -> None:
        self._memory.clear()
        if self._file is not None:
            self._file.close()
            self._file = None


def spool_dir(run_dir: Path) -> Path:
    """Where spools spill: beside the runtime's log, created private."""
    path = run_dir / "spool"
    path.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path
