"""The pipeline record: what the store holds and the API shows.

Records are immutable; every change makes a new record through `evolve`,
which also keeps the derived statuses (deployment_status and
deployment_desired_status) and their `_since` timestamps right, and bumps
`refresh_version`. Keeping that in one place is what makes "every status has
its `_since`" hold without each caller remembering it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stopcock.contract import statuses
from stopcock.contract.program import empty_program_error
from stopcock.contract.statuses import Program, Resources, Runtime, Storage

JsonObject = dict[str, Any]

# The contract's status names (stopcock.contract.statuses), as plain strings.
STOPPED = Resources.STOPPED.value
PROVISIONING = Resources.PROVISIONING.value
PROVISIONED = Resources.PROVISIONED.value
STOPPING = Resources.STOPPING.value
UNAVAILABLE = Runtime.UNAVAILABLE.value
INITIALIZING = Runtime.INITIALIZING.value
PAUSED = Runtime.PAUSED.value
RUNNING = Runtime.RUNNING.value
SUSPENDED = Runtime.SUSPENDED.value
FAILED = Runtime.FAILED.value
BOOTSTRAPPING = Runtime.BOOTSTRAPPING.value
AWAITING_APPROVAL = Runtime.AWAITING_APPROVAL.value
CLEARED = Storage.CLEARED.value
IN_USE = Storage.IN_USE.value
CLEARING = Storage.CLEARING.value
PENDING = Program.PENDING.value
SUCCESS = Program.SUCCESS.value
SQL_ERROR = Program.SQL_ERROR.value
PROGRAM_ERRORS = frozenset(status.value for status in statuses.PROGRAM_ERRORS)

PLATFORM_VERSION = "stopcock-0.1.0"


def now_us() -> int:
    """Wall-clock time in microseconds since the epoch (what `_since` holds)."""
    return time.time_ns() // 1000


def rfc3339(us: int) -> str:
    """RFC 3339 UTC with microseconds and `Z`, as Feldera prints times."""
    dt = datetime.fromtimestamp(us / 1_000_000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class PipelineRecord:
    id: str
    name: str
    description: str
    created_at: int
    version: int
    runtime_config: JsonObject
    program_code: str
    udf_rust: str
    udf_toml: str
    program_config: JsonObject
    tags: tuple[str, ...]
    program_version: int
    program_status: str
    program_status_since: int
    program_error: JsonObject
    program_info: JsonObject | None
    deployment_error: JsonObject | None
    deployment_id: str | None
    deployment_initial: str | None
    resources_status: str
    resources_status_since: int
    resources_desired: str
    resources_desired_since: int
    runtime_status: str | None
    runtime_status_since: int | None
    runtime_status_details: JsonObject | None
    runtime_desired: str | None
    runtime_desired_since: int | None
    deployment_status: str
    deployment_status_since: int
    deployment_desired_status: str
    deployment_desired_status_since: int
    storage_status: str
    storage_status_since: int
    storage_status_details: JsonObject | None
    refresh_version: int
    # Where the runtime process is: recorded so a restarted manager can
    # re-adopt it. `runtime_pid_start` (the kernel's start time of the
    # process) guards against a recycled pid.
    deployment_location: str | None = None
    runtime_pid: int | None = None
    runtime_pid_start: int | None = None
    # The deployment's bootstrap options (Feldera keeps them with the
    # deployment: set by /start, null/false once stopped). See
    # runtime/bootstrap.py.
    bootstrap_policy: str | None = None
    silent_bootstrap: bool = False
    concurrent_bootstrap: bool = False
    # Persisted before /approve answers, so that a restarted manager still
    # delivers the approval to a runtime awaiting it (control/actor.py).
    bootstrap_approved: bool = False
    # Feldera's deployment_resources_status_details: what the runner knows
    # of the resources ({process, working_dir} once provisioned).
    resources_status_details: JsonObject | None = None

    @property
    def fully_stopped(self) -> bool:
        return self.resources_status == STOPPED and self.resources_desired == STOPPED

    @property
    def storage_enabled(self) -> bool:
        return self.runtime_config.get("storage") is not None


def derived_status(resources: str, runtime: str | None) -> str:
    """deployment_status: the resources status unless Provisioned."""
    if resources != PROVISIONED:
        return resources
    return runtime or UNAVAILABLE


def derived_desired(resources_desired: str, runtime_desired: str | None) -> str:
    """deployment_desired_status: Stopped unless resources are wanted."""
    if resources_desired == STOPPED:
        return STOPPED
    return runtime_desired or RUNNING


_SINCE = {
    "resources_status": "resources_status_since",
    "resources_desired": "resources_desired_since",
    "runtime_status": "runtime_status_since",
    "runtime_desired": "runtime_desired_since",
    "program_status": "program_status_since",
    "storage_status": "storage_status_since",
}


def evolve(rec: PipelineRecord, at: int | None = None, **changes: Any) -> PipelineRecord:
    """A copy of `rec` with `changes`, derived fields and `_since`s updated."""
    at = now_us() if at is None else at
    for status_field, since_field in _SINCE.items():
        if status_field in changes and changes[status_field] != getattr(rec, status_field):
            if changes[status_field] is None and status_field.startswith("runtime"):
                changes[since_field] = None
            else:
                changes[since_field] = at
    new = dataclasses.replace(rec, **changes, refresh_version=rec.refresh_version + 1)
    status = derived_status(new.resources_status, new.runtime_status)
    desired = derived_desired(new.resources_desired, new.runtime_desired)
    extra: dict[str, Any] = {}
    if status != rec.deployment_status:
        extra["deployment_status"] = status
        extra["deployment_status_since"] = at
    if desired != rec.deployment_desired_status:
        extra["deployment_desired_status"] = desired
        extra["deployment_desired_status_since"] = at
    return dataclasses.replace(new, **extra) if extra else new


def annotate(rec: PipelineRecord, **metadata: Any) -> PipelineRecord:
    """A copy with client metadata (description, tags) changed, and nothing else:
    as in Feldera, metadata has no deployment semantics and moves no version
    counter, refresh_version included (caches key on the metadata too)."""
    return dataclasses.replace(rec, **metadata)


def new_record(
    *,
    pipeline_id: str,
    name: str,
    description: str,
    runtime_config: JsonObject,
    program_code: str,
    udf_rust: str,
    udf_toml: str,
    program_config: JsonObject,
    tags: tuple[str, ...],
    at: int,
) -> PipelineRecord:
    return PipelineRecord(
        id=pipeline_id,
        name=name,
        description=description,
        created_at=at,
        version=1,
        runtime_config=runtime_config,
        program_code=program_code,
        udf_rust=udf_rust,
        udf_toml=udf_toml,
        program_config=program_config,
        tags=tags,
        program_version=1,
        program_status=PENDING,
        program_status_since=at,
        program_error=empty_program_error(),
        program_info=None,
        deployment_error=None,
        deployment_id=None,
        deployment_initial=None,
        resources_status=STOPPED,
        resources_status_since=at,
        resources_desired=STOPPED,
        resources_desired_since=at,
        runtime_status=None,
        runtime_status_since=None,
        runtime_status_details=None,
        runtime_desired=None,
        runtime_desired_since=None,
        deployment_status=STOPPED,
        deployment_status_since=at,
        deployment_desired_status=STOPPED,
        deployment_desired_status_since=at,
        storage_status=CLEARED,
        storage_status_since=at,
        storage_status_details=None,
        refresh_version=1,
    )


def error_body(error_code: str, message: str, details: JsonObject | None) -> JsonObject:
    """A deployment_error: the same shape as an API error body."""
    return {"message": message, "error_code": error_code, "details": details}
