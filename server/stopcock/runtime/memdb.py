"""The pipeline's in-memory database, kept where a checkpoint can copy it fast.

The database is SQLite on files in tmpfs (/dev/shm): memory-backed like
`:memory:`, but with file descriptors, so that a checkpoint is a kernel-side
copy (`sendfile`) of the files into storage instead of `serialize()`, which
builds a copy in fresh Python memory first (page faults on every 4 KiB) and
made a checkpoint of 100 MB cost ~2.7x the raw write + fsync; the kernel-side
copy costs ~1.2-1.6x. Restoring is the same copy the other way.

WAL mode, one writer and a fixed pool of readers. Queries run on the readers,
each on its own snapshot (WAL's MVCC): a query never blocks ingest, a
checkpoint or a suspend, and they never block it. The pool is opened before
the files are unlinked, since SQLite opens a connection by path.

The files (database, -wal, -shm) are unlinked as soon as every connection
holds them open, so the memory is freed whenever the process ends, SIGKILL
included. SQLite never reopens them by path in WAL mode: the -wal and -shm
are opened once per process and shared by the connections.

A consistent cut is the pair (database file, WAL file) copied between two
write transactions: the WAL's committed frames are replayed on restore, and
frames of an uncommitted or older generation are ignored by SQLite's
checksums, as after any crash.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import uuid
from pathlib import Path

SHM = Path("/dev/shm")
READERS = 4  # queries that may run at once per pipeline; more wait for a reader
WAL_SIZE_LIMIT = 64 << 20  # the -wal is truncated back to this after a reset


def memory_dir() -> Path:
    """tmpfs when the machine has it; else the temp dir (the page cache still helps)."""
    if SHM.is_dir() and os.access(SHM, os.W_OK):
        return SHM
    return Path(tempfile.gettempdir())


def copy_fd(src: int, dest: int, size: int, src_offset: int = 0) -> None:
    """Copies `size` bytes from `src` (from `src_offset`) to `dest`'s position, in the kernel."""
    offset = src_offset
    end = src_offset + size
    while offset < end:
        sent = os.sendfile(dest, src, offset, end - offset)
        if sent == 0:
            raise OSError(f"short copy: {offset - src_offset} of {size} bytes")
        offset += sent


def _connect(path: Path, cache_kib: int) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA synchronous=OFF")  # durability comes from checkpoints
    db.execute(f"PRAGMA cache_size=-{cache_kib}")  # the files are in memory already
    # No mmap: mapped tmpfs pages would count in the runtime's RSS (a 1 GB
    # database would look like 1 GB of process memory); pread costs little more.
    db.execute("PRAGMA mmap_size=0")
    return db


class MemoryDatabase:
    def __init__(
        self, db: sqlite3.Connection, readers: list[sqlite3.Connection], fd: int, wal_fd: int
    ) -> None:
        self.db = db
        self.readers = readers
        self._fd = fd
        self._wal_fd = wal_fd

    @classmethod
    def open(cls, restore_from: Path | None = None, wal_size: int = 0) -> MemoryDatabase:
        """A new database, or one restored from a checkpoint file (database then WAL bytes)."""
        path = memory_dir() / f"stopcock-{uuid.uuid4().hex}.sqlite"
        wal = Path(f"{path}-wal")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        wal_fd = -1
        connections: list[sqlite3.Connection] = []
        try:
            if restore_from is not None:
                src = os.open(restore_from, os.O_RDONLY)
                try:
                    total = os.fstat(src).st_size
                    copy_fd(src, fd, total - wal_size)
                    if wal_size:
                        with open(os.open(wal, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                            copy_fd(src, f.fileno(), wal_size, total - wal_size)
                finally:
                    os.close(src)
            db = _connect(path, 8192)
            connections.append(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            # A write makes the file a WAL database on disk (its header), which
            # the readers need to see; after a restore it also folds the WAL in.
            # (The value written is the one there: a database records its program
            # in the header, see runtime/bootstrap.py's stamp.)
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            db.execute(f"PRAGMA user_version={version}")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            wal_fd = os.open(wal, os.O_RDONLY)
            for _ in range(READERS):
                reader = _connect(path, 2048)
                reader.execute("PRAGMA query_only=ON")
                reader.execute("SELECT count(*) FROM sqlite_schema").fetchone()
                connections.append(reader)
        except BaseException:
            for conn in connections:
                conn.close()
            os.close(fd)
            if wal_fd >= 0:
                os.close(wal_fd)
            raise
        finally:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{path}{suffix}").unlink()
        return cls(connections[0], connections[1:], fd, wal_fd)

    def copy_to(self, dest_fd: int) -> tuple[int, int]:
        """Copies the database then its WAL into `dest_fd` (between write transactions).

        Returns (total size, WAL bytes). A passive WAL checkpoint first moves
        what no reader still needs into the database file, so the WAL part
        is usually short; it never waits for a query.

        sendfile(): measured here for 100 MB at ~36 ms, against ~80 ms for
        write() from a plain mapping of the file (page faults) and ~39 ms
        from a MAP_POPULATE one.
        """
        _busy, log_frames, done = self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        size = os.fstat(self._fd).st_size
        copy_fd(self._fd, dest_fd, size)
        wal_size = 0
        if log_frames > 0 and done < log_frames:
            # Frames a running query still reads from: they go along.
            wal_size = os.fstat(self._wal_fd).st_size
            copy_fd(self._wal_fd, dest_fd, wal_size)
        return size + wal_size, wal_size

    def close(self) -> None:
        for reader in self.readers:
            reader.interrupt()
            reader.close()
        self.db.close()
        os.close(self._fd)
        os.close(self._wal_fd)
