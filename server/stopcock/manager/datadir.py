"""The data directory is private to the user that runs Stopcock.

It holds the database (pipeline programs, API key hashes), every pipeline's
checkpoints (its data), runtime logs and run files: nothing another local
user should read, and nothing they may write (a planted or swapped database
or checkpoint would be trusted). So:

  * every entry point that writes state (manager, runtime, launcher, the
    offline `stopcock api-key create`) sets the umask to STATE_UMASK first:
    whatever it creates, SQLite's WAL and SHM files included, is 0600 / 0700;
    runtime processes inherit the manager's umask and set it again themselves;
  * `prepare` creates the directory 0700, refuses one that others may write
    (its content cannot be trusted; the fix is the user's call), and
    tightens what an older Stopcock left readable by others.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from stopcock.manager.config import ConfigError

log = logging.getLogger("stopcock.datadir")

STATE_UMASK = 0o077
DIR_MODE = 0o700


class DataDirError(ConfigError):
    pass


def private_umask() -> None:
    """Files and directories created from now on are the user's alone."""
    os.umask(STATE_UMASK)


def prepare(data_dir: Path) -> int:
    """Creates or checks the data directory; returns how many entries it tightened.

    Raises DataDirError for a directory that group or others can write, or a
    path that is not a directory.
    """
    try:
        data_dir.mkdir(mode=DIR_MODE, parents=True)
    except FileExistsError:
        pass
    except OSError as exc:
        raise DataDirError(f"cannot create the data directory {data_dir}: {exc}") from exc
    try:
        info = data_dir.stat()
    except OSError as exc:
        raise DataDirError(f"cannot use the data directory {data_dir}: {exc}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise DataDirError(f"the data directory {data_dir} is not a directory")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise DataDirError(
            f"the data directory {data_dir} is writable by other users (mode {mode:04o}); "
            f"make it private with: chmod go-w {data_dir} (Stopcock then makes it 0700)"
        )
    tightened = _tighten(data_dir)
    if tightened:
        log.warning(
            "took group and other permissions off %d entries under %s: they were "
            "readable by other users (created by an older Stopcock)",
            tightened,
            data_dir,
        )
    return tightened


def _tighten(data_dir: Path) -> int:
    """Takes group and other bits off our own entries; symlinks are left alone.

    Entries of another owner are left as they are: chmod would fail for
    them (unless we are root, who should not change others' files).
    """
    uid = os.geteuid()
    count = 0
    paths = [data_dir]
    for root, dirs, files in os.walk(data_dir):
        paths.extend(Path(root, name) for name in (*dirs, *files))
    for path in paths:
        try:
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode) or info.st_uid != uid or not info.st_mode & 0o077:
                continue
            os.chmod(path, stat.S_IMODE(info.st_mode) & ~0o077)
            count += 1
        except FileNotFoundError:
            continue  # removed meanwhile (a re-adopted runtime drops old checkpoints)
        except OSError as exc:
            # Not a reason to refuse to start: the directory itself is checked.
            log.warning("cannot make %s private: %s", path, exc)
    return count
