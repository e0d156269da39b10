"""Test-only fault injection for the runtime process.

STOPCOCK_RUNTIME_TEST_FAULTS holds comma-separated `key=value` pairs. It
exists so that tests can hold a runtime in a state long enough to act on it
(kill it mid-checkpoint, kill the manager mid-suspend). Never set it in
production; an empty or absent variable turns every fault off.

  startup_delay_secs=N          wait N seconds before listening (provisioning timeout)
  checkpoint_hold_file=PATH     while PATH exists, a checkpoint waits after writing its
                                data and before making it visible (a slow checkpoint)
  checkpoint_obstacle_file=PATH while PATH exists, checkpoints fail with a temporary
                                error (a suspend keeps retrying)
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("stopcock.runtime.faults")
ENV = "STOPCOCK_RUNTIME_TEST_FAULTS"
_HOLD_POLL_SECS = 0.01  # test-only: how often a held checkpoint looks again


@dataclass(frozen=True, slots=True)
class Faults:
    startup_delay_secs: float = 0.0
    checkpoint_hold_file: Path | None = None
    checkpoint_obstacle_file: Path | None = None

    @classmethod
    def from_env(cls) -> Faults:
        raw = os.environ.get(ENV, "")
        pairs = dict(item.split("=", 1) for item in raw.split(",") if "=" in item)
        hold = pairs.get("checkpoint_hold_file")
        obstacle = pairs.get("checkpoint_obstacle_file")
        faults = cls(
            startup_delay_secs=float(pairs.get("startup_delay_secs", "0")),
            checkpoint_hold_file=Path(hold) if hold else None,
            checkpoint_obstacle_file=Path(obstacle) if obstacle else None,
        )
        if faults != cls():
            log.warning("TEST FAULTS ACTIVE: %s", faults)
        return faults

    def hold_checkpoint(self, tmp_file: Path) -> None:
        """Blocks (in the checkpoint's thread) while the hold file exists."""
        if self.checkpoint_hold_file is None:
            return
        while self.checkpoint_hold_file.exists():
            time.sleep(_HOLD_POLL_SECS)

    def checkpoint_obstacle(self) -> bool:
        return self.checkpoint_obstacle_file is not None and self.checkpoint_obstacle_file.exists()
