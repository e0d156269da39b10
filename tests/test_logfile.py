"""The runtime's log rotation (stopcock.runtime.logfile): on write, never by a timer."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from stopcock.runtime.logfile import RotatingStderr


def test_a_write_past_the_limit_rotates_and_later_writes_go_to_a_fresh_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runtime.log"
    # A spare fd stands for fds 1 and 2 of a runtime: the handler re-points it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    stream = os.fdopen(fd, "w", buffering=1)
    handler = RotatingStderr(path, limit=100, stream=stream, fds=(fd,))
    logger = logging.Logger("rotation-test")
    logger.addHandler(handler)
    try:
        logger.error("x" * 40)
        assert not path.with_name("runtime.log.1").exists()  # under the limit
        logger.error("y" * 80)  # past it: this record ends the old file
        old = path.with_name("runtime.log.1").read_text()
        assert "x" * 40 in old and "y" * 80 in old
        assert path.read_text() == ""
        logger.error("z" * 10)
        assert path.read_text() == "z" * 10 + "\n"
        assert oct(path.stat().st_mode & 0o777) == oct(0o600)
        # Only the newest old file is kept.
        logger.error("w" * 120)
        assert "w" * 120 in path.with_name("runtime.log.1").read_text()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["runtime.log", "runtime.log.1"]
    finally:
        stream.close()
