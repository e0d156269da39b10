"""The contract's transition rules, with no I/O.

Each `on_*` function takes the current record and a request and returns the
changes to persist (a dict for `model.evolve`), `None` when the request is
accepted but changes nothing (repeated starts and stops), or raises the
`ApiError` the contract prescribes. The lifecycle persists what these return
before it answers, then pokes the pipeline's actor, which does the work.

The rules, from contract.md:
  resources: Stopped -> Provisioning -> Provisioned -> Stopping -> Stopped,
             Provisioning -> Stopping; entering Stopping sets desired Stopped.
  runtime desired: Paused <-> Running; Paused/Running -> Suspended (terminal).
  storage: Cleared -> InUse (on start) -> Clearing (/clear) -> Cleared, only
           while fully stopped.
"""

from __future__ import annotations

from typing import Any

from stopcock.manager.domain import errors
from stopcock.manager.domain.bootstrap_options import (
    BootstrapOptions,
    check_standby,
    check_unchanged,
)
from stopcock.manager.domain.model import (
    CLEARED,
    CLEARING,
    PAUSED,
    PROGRAM_ERRORS,
    PROVISIONED,
    RUNNING,
    STOPPED,
    SUSPENDED,
    UNAVAILABLE,
    PipelineRecord,
)

Changes = dict[str, Any]

INITIAL_VALUES = {"running": RUNNING, "paused": PAUSED}

HINT_STOPPING = (
    "Cannot restart the pipeline while it is stopping. "
    "Wait for it to stop before starting a new instance of the pipeline."
)
HINT_SUSPENDING = (
    "Cannot restart the pipeline while it is suspending. "
    "Wait for it to stop before starting a new instance of the pipeline."
)


def is_stopping(rec: PipelineRecord) -> bool:
    """A stop (forced or after a suspend) is under way and cannot be undone."""
    return rec.resources_desired == STOPPED and rec.resources_status != STOPPED


def is_suspending(rec: PipelineRecord) -> bool:
    return rec.resources_desired == PROVISIONED and rec.runtime_desired == SUSPENDED


def on_start(
    rec: PipelineRecord,
    initial: str,
    dismiss_error: bool,
    options: BootstrapOptions | None = None,
) -> Changes | None:
    options = options or BootstrapOptions()
    runtime_desired = INITIAL_VALUES.get(initial)
    # Feldera knows `standby` (refused below, as Feldera refuses it).
    if runtime_desired is None and initial != "standby":
        raise errors.unsupported_action(
            "start",
            f"initial must be 'running' or 'paused', not '{initial}'",
        )
    if is_stopping(rec):
        raise errors.illegal_action(
            rec.resources_status, rec.resources_desired, PROVISIONED, HINT_STOPPING
        )
    if is_suspending(rec):
        raise errors.illegal_action(
            rec.resources_status, rec.resources_desired, PROVISIONED, HINT_SUSPENDING
        )
    if rec.resources_desired == PROVISIONED:
        # Already started: the same start again is a no-op; a different
        # `initial` cannot apply to a running deployment.
        if rec.deployment_initial != runtime_desired:
            raise errors.precondition(
                "InitialImmutableUnlessStopped",
                f"The pipeline was started with initial '{(rec.deployment_initial or '').lower()}'"
                f"; it cannot be changed to '{initial}' until the pipeline is stopped",
            )
        check_unchanged(rec, options)
        return None
    if rec.storage_status == CLEARING:
        raise errors.precondition(
            "CannotStartWhileClearingStorage",
            "Cannot start the pipeline while its storage is being cleared",
        )
    if rec.program_status in PROGRAM_ERRORS:
        raise errors.precondition(
            "CannotStartWithCompilationError",
            f"Cannot start the pipeline: its program failed to compile ({rec.program_status})",
        )
    if runtime_desired is None:
        check_standby(rec)  # always raises: there is no standby in Stopcock
    changes: Changes = {
        "resources_desired": PROVISIONED,
        "runtime_desired": runtime_desired,
        "deployment_initial": runtime_desired,
        **options.changes(),
    }
    if rec.deployment_error is not None:
        if not dismiss_error:
            raise errors.precondition(
                "CannotStartWithUndismissedError",
                "Cannot start the pipeline while it has a deployment error: dismiss it first "
                "(POST /dismiss_error) or start with dismiss_error=true",
            )
        changes["deployment_error"] = None
    return changes


def force_stop_changes(rec: PipelineRecord) -> Changes | None:
    if rec.resources_desired == STOPPED:
        return None  # already stopping or stopped: a repeated force stop
    changes: Changes = {"resources_desired": STOPPED, "runtime_desired": None}
    if rec.resources_status == STOPPED:
        # Stopped before the actor began: the start's options go with it (Feldera).
        changes.update(bootstrap_policy=None, silent_bootstrap=False, concurrent_bootstrap=False)
    return changes


def on_stop(rec: PipelineRecord, force: bool) -> Changes | None:
    if force:
        return force_stop_changes(rec)
    if rec.resources_desired == STOPPED:
        return None
    # With storage disabled the suspend is still accepted, as in Feldera: the
    # runtime then refuses it for good (nowhere to checkpoint) and the pipeline
    # is force-stopped with that error recorded (Feldera's own tests expect the
    # 202 and the deployment_error).
    if rec.resources_status != PROVISIONED:
        # Nothing runs yet that could checkpoint: the contract makes this a
        # force stop.
        return force_stop_changes(rec)
    if rec.runtime_desired == SUSPENDED:
        return None
    if rec.runtime_status in (None, UNAVAILABLE):
        raise errors.unreachable(rec.name, "suspend", "the runtime is not reachable right now")
    return {"runtime_desired": SUSPENDED}


def _interaction_precheck(rec: PipelineRecord, to: str) -> None:
    if is_stopping(rec) or is_suspending(rec):
        reason = "the pipeline is stopping" if is_stopping(rec) else "the pipeline is suspending"
        raise errors.invalid_transition(rec.deployment_status, to, reason)
    if rec.resources_status != PROVISIONED:
        raise errors.not_deployed(rec.name, rec.deployment_status, rec.deployment_desired_status)
    if rec.runtime_status in (None, UNAVAILABLE):
        raise errors.unreachable(rec.name, to.lower(), "the runtime is not reachable right now")


def on_pause(rec: PipelineRecord) -> Changes | None:
    _interaction_precheck(rec, PAUSED)
    return None if rec.runtime_desired == PAUSED else {"runtime_desired": PAUSED}


def on_resume(rec: PipelineRecord) -> Changes | None:
    _interaction_precheck(rec, RUNNING)
    return None if rec.runtime_desired == RUNNING else {"runtime_desired": RUNNING}


def on_dismiss_error(rec: PipelineRecord) -> Changes | None:
    if rec.deployment_error is None:
        return None
    if not rec.fully_stopped:
        raise errors.precondition(
            "DismissErrorRestrictedToFullyStopped",
            "The deployment error can only be dismissed once the pipeline is fully stopped",
        )
    return {"deployment_error": None}


def on_clear(rec: PipelineRecord) -> Changes | None:
    if rec.storage_status in (CLEARED, CLEARING):
        return None
    if not rec.fully_stopped:
        raise errors.precondition(
            "StorageStatusImmutableUnlessStopped",
            "Storage can only be cleared once the pipeline is fully stopped",
            {
                "resources_status": rec.resources_status,
                "resources_desired_status": rec.resources_desired,
                "current_status": rec.storage_status,
                "new_status": CLEARING,
            },
        )
    return {"storage_status": CLEARING}


def check_delete(rec: PipelineRecord) -> None:
    if not rec.fully_stopped:
        raise errors.precondition(
            "DeleteRestrictedToFullyStopped",
            "Cannot delete a pipeline which is not fully stopped: stop it first",
        )
    if rec.storage_status != CLEARED:
        raise errors.precondition(
            "DeleteRestrictedToClearedStorage",
            "Cannot delete a pipeline whose storage is not cleared: clear it first (POST /clear)",
        )


PROGRAM_FIELDS = ("program_code", "udf_rust", "udf_toml", "program_config")
# Client metadata (Feldera's ClientMetadata): no deployment semantics, so it may
# change at any time and moves none of the version counters.
METADATA_FIELDS = ("description", "tags")
# Fields whose change bumps `version` and needs a fully stopped pipeline.
CORE_FIELDS = ("name", "runtime_config", *PROGRAM_FIELDS)
_ONE = 1


def _resources(cfg: dict[str, Any], key: str) -> Any:
    resources = cfg.get("resources")
    return resources.get(key) if isinstance(resources, dict) else None


def _state_bound(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """runtime_config keys baked into the stored state (Feldera's update_pipeline)."""
    bound = []
    if old.get("workers") != new.get("workers"):
        bound.append("`runtime_config.workers`")
    if old.get("hosts", _ONE) != new.get("hosts", _ONE):
        bound.append("`runtime_config.hosts`")
    if old.get("fault_tolerance") != new.get("fault_tolerance"):
        bound.append("`runtime_config.fault_tolerance`")
    for key in ("storage_mb_max", "namespace", "storage_class"):
        if _resources(old, key) != _resources(new, key):
            bound.append(f"`runtime_config.resources.{key}`")
    # Absent and null both mean "no offset".
    if old.get("clock_timezone_offset") != new.get("clock_timezone_offset"):
        bound.append("`runtime_config.clock_timezone_offset`")
    return bound


def check_edit(rec: PipelineRecord, changes: dict[str, Any]) -> None:
    """Feldera's edit rules for `changes` (field -> new value, only fields that differ).

    Metadata may change at any time. Any other change needs a fully stopped
    pipeline. With storage in use, the program may change (the next start
    bootstraps it), but not what the stored state depends on: the name, and
    the runtime_config keys of `_state_bound`.
    """
    core = [f for f in changes if f in CORE_FIELDS]
    if not core:
        return
    if not rec.fully_stopped:
        raise errors.precondition(
            "UpdateRestrictedToStopped",
            "Pipeline can only be updated while stopped. Stop it first by invoking '/stop'.",
        )
    if rec.storage_status == CLEARED:
        return
    not_allowed = ["`name`"] if "name" in changes else []
    if "runtime_config" in changes:
        not_allowed += _state_bound(rec.runtime_config, changes["runtime_config"])
    if not_allowed:
        raise errors.precondition(
            "EditRestrictedToClearedStorage",
            "The following pipeline edits are not allowed while storage is not cleared: "
            + ", ".join(not_allowed),
            {"not_allowed": not_allowed},
        )
