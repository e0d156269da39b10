"""The resource automaton's transitions, in one table.

deployment_resources_status moves only along these edges (docs/contract.md:
Stopped -> Provisioning -> Provisioned -> Stopping -> Stopped, and
Provisioning -> Stopping). Each edge carries the fields that always change
with it; the actor adds what only it knows (a new deployment id, the
runtime's address). Every write is checked against the table
(`check`), and the stateful property test walks the same edges: there is
no second copy of the rules to drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from stopcock.manager.domain.model import (
    IN_USE,
    INITIALIZING,
    PROVISIONED,
    PROVISIONING,
    STOPPED,
    STOPPING,
    PipelineRecord,
)

# Entering Stopping always sets desired to Stopped and forgets the runtime's
# state: whatever it was doing is over.
_INTO_STOPPING = {
    "resources_desired": STOPPED,
    "runtime_desired": None,
    "runtime_status": None,
    "runtime_status_details": None,
}

# What Feldera's local runner reports of a provisioned deployment's resources
# (its process is alive, its working directory exists): the actor finds the
# runtime gone on its own and stops the pipeline with an error instead.
# A plain dict (it is stored as JSON), never mutated: records are immutable.
RESOURCES_PROVISIONED_DETAILS = {"process": "has not exited", "working_dir": "exists"}

TABLE: Mapping[tuple[str, str], Mapping[str, Any]] = MappingProxyType(
    {
        (STOPPED, PROVISIONING): {"deployment_error": None, "storage_status": IN_USE},
        (PROVISIONING, PROVISIONED): {
            "runtime_status": INITIALIZING,
            "resources_status_details": RESOURCES_PROVISIONED_DETAILS,
        },
        (PROVISIONING, STOPPING): _INTO_STOPPING,
        (PROVISIONED, STOPPING): _INTO_STOPPING,
        (STOPPING, STOPPED): {
            "deployment_id": None,
            "deployment_location": None,
            "deployment_initial": None,
            "runtime_pid": None,
            "runtime_pid_start": None,
            "runtime_status": None,
            "runtime_status_details": None,
            "runtime_desired": None,
            # The deployment's bootstrap options end with it (Feldera shows
            # bootstrap_policy null once stopped).
            "bootstrap_policy": None,
            "silent_bootstrap": False,
            "concurrent_bootstrap": False,
            "bootstrap_approved": False,
            "resources_status_details": None,
        },
    }
)


class IllegalResourceTransition(AssertionError):
    """A write that would move deployment_resources_status along no edge: a bug."""


def changes(rec: PipelineRecord, to: str, **extra: Any) -> dict[str, Any]:
    """The changes that move `rec` to resources status `to`, with `extra` fields."""
    edge = TABLE.get((rec.resources_status, to))
    if edge is None:
        raise IllegalResourceTransition(f"resources cannot go {rec.resources_status} -> {to}")
    return {**edge, **extra, "resources_status": to}


def check(old: PipelineRecord, new: PipelineRecord) -> None:
    """Refuses a write whose resources status change is not an edge of the table."""
    if old.resources_status != new.resources_status and (
        (old.resources_status, new.resources_status) not in TABLE
    ):
        raise IllegalResourceTransition(
            f"pipeline {old.name}: resources cannot go "
            f"{old.resources_status} -> {new.resources_status}"
        )
    if new.resources_status == STOPPING and new.resources_desired != STOPPED:
        raise IllegalResourceTransition(f"pipeline {old.name}: Stopping with desired Provisioned")
