"""Checkpoints on disk: atomic, verified, the last few kept.

Layout of a pipeline's storage directory:
    checkpoints/<uuid>.sqlite   one file per checkpoint (a serialized database)
    manifest.json               {"version": 1, "checkpoints": [entry, ...]}, oldest first

A checkpoint becomes part of the pipeline's history only when the manifest
names it, and the manifest is replaced atomically:
    1. copy the database to checkpoints/<uuid>.sqlite.tmp (`stage`, between
       two transactions: the consistent cut), then fsync it (`commit`);
    2. rename it to <uuid>.sqlite, fsync the directory;
    3. write manifest.json.tmp (old entries + the new one, trimmed to KEEP),
       fsync it, rename it over manifest.json, fsync the storage directory;
    4. only then delete the files of entries that were trimmed.
A crash at any step leaves the previous manifest and all its files intact;
at worst a stray .tmp file or an unlisted checkpoint file remains, and the
next successful write removes it. Restore takes the newest listed checkpoint
whose file has the recorded size, falling back to older ones.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stopcock.runtime.faults import Faults
from stopcock.runtime.memdb import MemoryDatabase

log = logging.getLogger("stopcock.runtime.checkpoints")

KEEP = 2
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
# Errors that may clear by themselves (a full disk, a busy device): a suspend
# retries them. Anything else (permissions, a read-only or missing storage
# directory, I/O errors) is permanent.
TEMPORARY_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EAGAIN, errno.EBUSY, errno.EINTR})


class CheckpointError(Exception):
    def __init__(self, message: str, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


@dataclass(frozen=True, slots=True)
class Staged:
    """A checkpoint's data in a temporary file, not yet durable nor listed."""

    uuid: str
    tmp: Path
    fd: int
    size: int
    started: float  # time.monotonic() when the copy began


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    uuid: str
    size: int
    processed_records: int
    sequence_number: int
    created_at: str
    file: str
    duration_ms: float = 0.0  # copy + fsync + rename + manifest

    def public(self) -> dict[str, Any]:
        """What storage_status_details shows of it."""
        return {k: v for k, v in asdict(self).items() if k != "file"}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointStore:
    def __init__(self, storage_dir: Path, faults: Faults) -> None:
        self.dir = storage_dir
        self._files = storage_dir / "checkpoints"
        self._faults = faults

    def list(self) -> list[CheckpointInfo]:
        """The checkpoints the manifest names, oldest first."""
        try:
            raw = json.loads((self.dir / MANIFEST).read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read the checkpoint manifest: {exc}", False) from exc
        return [CheckpointInfo(**entry) for entry in raw.get("checkpoints", [])]

    def stage(self, source: MemoryDatabase) -> Staged:
        """Copies the database into a temporary file (call it between transactions).

        This is the consistent cut; `commit` then makes it durable and visible
        without holding up the database.
        """
        with self._errors():
            if self._faults.checkpoint_obstacle():
                raise CheckpointError(
                    "storage is busy (test fault: checkpoint_obstacle_file)", True
                )
            started = time.monotonic()
            self._files.mkdir(parents=True, exist_ok=True)
            name = str(uuid.uuid4())
            tmp = self._files / f"{name}.sqlite.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                size = source.copy_to(fd)
            except BaseException:
                os.close(fd)
                tmp.unlink(missing_ok=True)
                raise
            return Staged(name, tmp, fd, size, started)

    def commit(
        self, staged: Staged, processed_records: int, sequence_number: int
    ) -> CheckpointInfo:
        """Makes a staged checkpoint durable, then names it in the manifest."""
        with self._errors():
            try:
                os.fsync(staged.fd)
            finally:
                os.close(staged.fd)
            self._faults.hold_checkpoint(staged.tmp)
            final = staged.tmp.with_name(f"{staged.uuid}.sqlite")
            os.replace(staged.tmp, final)
            _fsync_dir(self._files)
            info = CheckpointInfo(
                uuid=staged.uuid,
                size=staged.size,
                processed_records=processed_records,
                sequence_number=sequence_number,
                created_at=now_rfc3339(),
                file=final.name,
                duration_ms=round((time.monotonic() - staged.started) * 1000, 3),
            )
            kept = [*self.list(), info][-KEEP:]
            manifest = {"version": MANIFEST_VERSION, "checkpoints": [asdict(c) for c in kept]}
            tmp_manifest = self.dir / (MANIFEST + ".tmp")
            _write_file(tmp_manifest, json.dumps(manifest, indent=1).encode())
            os.replace(tmp_manifest, self.dir / MANIFEST)
            _fsync_dir(self.dir)
            return info

    def remove_unlisted(self) -> None:
        """Deletes checkpoint files the manifest no longer names (and stray .tmp files).

        Not part of `commit`: deleting a 100 MB file takes ~25 ms, which a
        suspend need not wait for. Whatever a crash leaves behind is removed
        by the next call.
        """
        with contextlib.suppress(OSError):
            self._remove_unlisted({c.file for c in self.list()})

    def discard(self, staged: Staged) -> None:
        """Drops a staged checkpoint that will not be committed."""
        with contextlib.suppress(OSError):
            os.close(staged.fd)
        staged.tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            temporary = exc.errno in TEMPORARY_ERRNOS
            raise CheckpointError(
                f"cannot write checkpoint to {self.dir}: {exc.strerror or exc}", temporary
            ) from exc

    def _remove_unlisted(self, listed: set[str]) -> None:
        if not self._files.is_dir():
            return
        for path in self._files.iterdir():
            if path.name not in listed:
                with contextlib.suppress(OSError):
                    path.unlink()

    def latest(self) -> tuple[CheckpointInfo, Path] | None:
        """The newest intact checkpoint and its file, or None when there is none."""
        for info in reversed(self.list()):
            path = self._files / info.file
            try:
                size = path.stat().st_size
            except OSError as exc:
                log.error("checkpoint %s is unreadable (%s); trying an older one", info.uuid, exc)
                continue
            if size != info.size:
                log.error(
                    "checkpoint %s has %d bytes, expected %d; trying an older one",
                    info.uuid,
                    size,
                    info.size,
                )
                continue
            return info, path
        return None


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
