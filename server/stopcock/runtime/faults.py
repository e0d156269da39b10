"""Test-only fault injection for the runtime process.

STOPCOCK_RUNTIME_TEST_FAULTS holds comma-separated `key=value` pairs. It
exists so that tests can hold a runtime in a state long enough to act on it
(kill it mid-checkpoint, kill the manager mid-suspend). Never set it in
production; an empty or absent variable turns every fault off.

  startup_hold_file=PATH        while PATH exists, the runtime waits before listening (a
                                pipeline held in Provisioning, a provisioning timeout)
  checkpoint_hold_file=PATH     while PATH exists, a checkpoint waits after writing its
                                data and before making it visible (a slow checkpoint)
  checkpoint_obstacle_file=PATH while PATH exists, checkpoints fail with a temporary
                                error (a suspend keeps retrying)
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("stopcock.runtime.faults")
ENV = "STOPCOCK_RUNTIME_TEST_FAULTS"
_HOLD_POLL_SECS = 0.01  # test-only: how often a held startup or checkpoint looks again
_KEYS = {"startup_hold_file", "checkpoint_hold_file", "checkpoint_obstacle_file"}


@dataclass(frozen=True, slots=True)
class Faults:
    startup_hold_file: Path | None = None
    checkpoint_hold_file: Path | None = None
    checkpoint_obstacle_file: Path | None = None

    @classmethod
    def from_env(cls) -> Faults:
        raw = os.environ.get(ENV, "")
        pairs = dict(item.split("=", 1) for item in raw.split(",") if "=" in item)
        # A misspelt (or retired) fault would silently test nothing: refuse it.
        if unknown := sorted(set(pairs) - _KEYS):
            raise ValueError(f"{ENV}: unknown test faults {unknown}")
        paths = {key: Path(value) for key, value in pairs.items() if value}
        faults = cls(
            startup_hold_file=paths.get("startup_hold_file"),
            checkpoint_hold_file=paths.get("checkpoint_hold_file"),
            checkpoint_obstacle_file=paths.get("checkpoint_obstacle_file"),
        )
        if faults != cls():
            log.warning("TEST FAULTS ACTIVE: %s", faults)
        return faults

    async def hold_startup(self) -> None:
        """Waits while the startup hold file exists, in a thread: the event loop stays free."""
        if self.startup_hold_file is not None:
            await asyncio.to_thread(_wait_while_exists, self.startup_hold_file)

    def hold_checkpoint(self, tmp_file: Path) -> None:
        """Blocks (in the checkpoint's thread) while the hold file exists."""
        if self.checkpoint_hold_file is not None:
            _wait_while_exists(self.checkpoint_hold_file)

    def checkpoint_obstacle(self) -> bool:
        return self.checkpoint_obstacle_file is not None and self.checkpoint_obstacle_file.exists()


def _wait_while_exists(path: Path) -> None:
    """A bounded poll (no inotify in the standard library): returns ~10 ms after `path` goes."""
    while path.exists():
        time.sleep(_HOLD_POLL_SECS)
