"""The pipeline's in-memory database, kept where a checkpoint can copy it fast.

The database is SQLite on a file in tmpfs (/dev/shm): memory-backed like
`:memory:`, but with a file descriptor, so that a checkpoint is a kernel-side
copy (`sendfile`) of the file into storage instead of `serialize()`, which
builds a copy in fresh Python memory first (page faults on every 4 KiB) and
made a checkpoint of 100 MB cost ~2.7x the raw write + fsync; the kernel-side
copy costs ~1.2-1.6x. Restoring is the same copy the other way.

The file is unlinked as soon as SQLite and we hold it open, so the memory is
freed whenever the process ends, SIGKILL included. With journal_mode=MEMORY
and locking_mode=EXCLUSIVE, SQLite never needs the path again.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import uuid
from pathlib import Path

SHM = Path("/dev/shm")


def memory_dir() -> Path:
    """tmpfs when the machine has it; else the temp dir (the page cache still helps)."""
    if SHM.is_dir() and os.access(SHM, os.W_OK):
        return SHM
    return Path(tempfile.gettempdir())


def copy_fd(src: int, dest: int, size: int) -> None:
    """Copies `size` bytes from the start of `src` to `dest`, in the kernel."""
    offset = 0
    while offset < size:
        sent = os.sendfile(dest, src, offset, size - offset)
        if sent == 0:
            raise OSError(f"short copy: {offset} of {size} bytes")
        offset += sent


class MemoryDatabase:
    def __init__(self, db: sqlite3.Connection, fd: int) -> None:
        self.db = db
        self._fd = fd

    @classmethod
    def open(cls, restore_from: Path | None = None) -> MemoryDatabase:
        path = memory_dir() / f"stopcock-{uuid.uuid4().hex}.sqlite"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if restore_from is not None:
                src = os.open(restore_from, os.O_RDONLY)
                try:
                    copy_fd(src, fd, os.fstat(src).st_size)
                finally:
                    os.close(src)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA journal_mode=MEMORY")  # rollback works; no journal file
            db.execute("PRAGMA synchronous=OFF")  # durability comes from checkpoints
            db.execute("PRAGMA cache_size=-8192")  # 8 MiB: the file is in memory already
            db.execute("PRAGMA mmap_size=4294967296")
            db.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # takes the lock
        except BaseException:
            os.close(fd)
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return cls(db, fd)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def copy_to(self, dest_fd: int) -> int:
        """Copies the database into `dest_fd` (call between transactions); returns its size.

        sendfile(): measured here for 100 MB at ~36 ms, against ~80 ms for
        write() from a plain mapping of the file (page faults) and ~39 ms
        from a MAP_POPULATE one.
        """
        size = self.size()
        copy_fd(self._fd, dest_fd, size)
        return size

    def close(self) -> None:
        self.db.close()
        os.close(self._fd)
