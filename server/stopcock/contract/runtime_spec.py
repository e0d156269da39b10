"""What a runtime process is told when it is spawned: its spec file.

The manager writes it (owner-only: it holds the deployment's secret) into
the runtime's run directory before spawning it; the runtime reads it at
start; a restarted manager reads the secret back to command a runtime it
re-adopts. JSON, so an operator can read it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPEC_FILE = "spec.json"
# The internal RuntimeService's version. A manager re-adopts only runtimes
# that speak its own (an older Stopcock's runtime, still running across an
# upgrade, is stopped instead: its pipeline restarts from its checkpoint).
# 1: string statuses and JSON in strings; 2: typed messages.
PROTOCOL = 2


@dataclass(frozen=True, slots=True)
class RuntimeSpec:
    pipeline_id: str
    pipeline_name: str
    deployment_id: str
    program_code: str
    runtime_config: dict[str, Any]
    initial: str  # the runtime's first desired status: Running, Paused or Suspended
    storage_dir: str
    runtime_token: str = ""  # every call from the manager carries it
    protocol: int = 1  # a spec without it was written for protocol 1
    # The spawning owner's lease epoch: the runtime obeys no lower one
    # (contract/fencing.py). A spec without it was written before leases: 0.
    epoch: int = 0
    # What a start from a checkpoint of another program does: "allow",
    # "reject" or "await_approval" (runtime/bootstrap.py). "allow" when the
    # deployment's bootstrap was already approved. A spec written before
    # bootstrapping existed: "allow", as that runtime behaved.
    bootstrap_policy: str = "allow"

    def write(self, run_dir: Path) -> None:
        """Writes the spec atomically, readable by its owner only."""
        path = run_dir / SPEC_FILE
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w") as f:
            f.write(json.dumps(dataclasses.asdict(self)))  # one write, not one per token
        os.replace(tmp, path)

    @classmethod
    def read(cls, run_dir: Path) -> RuntimeSpec:
        """The spec in `run_dir`; OSError or ValueError if it is missing or bad."""
        raw = json.loads((run_dir / SPEC_FILE).read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in raw.items() if k in names})
        except TypeError as exc:
            raise ValueError(f"bad runtime spec: {exc}") from exc
