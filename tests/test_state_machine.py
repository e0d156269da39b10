"""The contract's transition rules, exercised on records without any I/O."""

from __future__ import annotations

from typing import Any

import pytest
from stopcock.manager.domain import errors, state_machine
from stopcock.manager.domain.bootstrap_options import BootstrapOptions
from stopcock.manager.domain.model import PipelineRecord, evolve, new_record

SEED_STOPPING_BODY = {
    "message": "Deployment resources status (current: 'Stopping', desired: 'Stopped') cannot "
    "have desired changed to 'Provisioned'. Cannot restart the pipeline while it is stopping. "
    "Wait for it to stop before starting a new instance of the pipeline.",
    "error_code": "IllegalPipelineAction",
    "details": {
        "status": "Stopping",
        "current_desired_status": "Stopped",
        "new_desired_status": "Provisioned",
        "hint": "Cannot restart the pipeline while it is stopping. Wait for it to stop before "
        "starting a new instance of the pipeline.",
    },
}


def record(**changes: Any) -> PipelineRecord:
    rec = new_record(
        pipeline_id="id-1",
        name="p",
        description="",
        runtime_config={"storage": {}},
        program_code="",
        udf_rust="",
        udf_toml="",
        program_config={},
        tags=(),
        at=1,
    )
    return evolve(rec, at=2, **{"program_status": "Success", **changes})


def running(**changes: Any) -> PipelineRecord:
    base: dict[str, Any] = {
        "resources_status": "Provisioned",
        "resources_desired": "Provisioned",
        "runtime_status": "Running",
        "runtime_desired": "Running",
        "deployment_initial": "Running",
    }
    return record(**{**base, **changes})


def refused(fn: Any, *args: Any) -> errors.ApiError:
    with pytest.raises(errors.ApiError) as info:
        fn(*args)
    return info.value


def test_start_from_stopped_sets_desired() -> None:
    changes = state_machine.on_start(record(), "paused", True)
    assert changes == {
        "resources_desired": "Provisioned",
        "runtime_desired": "Paused",
        "deployment_initial": "Paused",
        # Feldera's default bootstrap options, kept with the deployment.
        "bootstrap_policy": "await_approval",
        "silent_bootstrap": False,
        "concurrent_bootstrap": False,
    }


def test_start_while_stopping_is_the_seed_error() -> None:
    rec = record(resources_status="Stopping", resources_desired="Stopped")
    err = refused(state_machine.on_start, rec, "running", True)
    assert (err.http_status, err.body()) == (400, SEED_STOPPING_BODY)


def test_start_after_force_stop_acknowledged_is_refused_too() -> None:
    rec = running(resources_desired="Stopped", runtime_desired=None)
    err = refused(state_machine.on_start, rec, "running", True)
    assert err.error_code == "IllegalPipelineAction"
    assert err.details is not None and err.details["status"] == "Provisioned"


def test_repeated_start_is_idempotent_but_initial_is_immutable() -> None:
    assert state_machine.on_start(running(), "running", True) is None
    err = refused(state_machine.on_start, running(), "paused", True)
    assert err.error_code == "InitialImmutableUnlessStopped"


@pytest.mark.parametrize("initial", ["", "Running", "suspended"])
def test_unknown_initial_is_405(initial: str) -> None:
    err = refused(state_machine.on_start, record(), initial, True)
    assert (err.http_status, err.error_code) == (405, "UnsupportedPipelineAction")


def test_standby_is_refused_as_feldera_refuses_it() -> None:
    err = refused(state_machine.on_start, record(), "standby", True)
    assert (err.http_status, err.error_code) == (400, "InitialStandbyNotAllowed")
    # With Feldera's requirements met, Stopcock still has no standby: 405.
    synced = {"storage": {"backend": {"name": "file", "config": {"sync": {"bucket": "b"}}}}}
    err = refused(state_machine.on_start, record(runtime_config=synced), "standby", True)
    assert (err.http_status, err.error_code) == (405, "UnsupportedPipelineAction")


def test_bootstrap_options_are_fixed_until_stopped() -> None:
    options = BootstrapOptions.parse("allow", False, False)
    rec = running(bootstrap_policy="allow")
    assert state_machine.on_start(rec, "running", True, options) is None
    err = refused(
        state_machine.on_start, rec, "running", True, BootstrapOptions.parse("reject", False, False)
    )
    assert (err.http_status, err.error_code) == (400, "BootstrapPolicyImmutableUnlessStopped")
    err = refused(
        state_machine.on_start, rec, "running", True, BootstrapOptions.parse("allow", True, False)
    )
    assert err.error_code == "BootstrapPolicyImmutableUnlessStopped"


@pytest.mark.parametrize(
    ("policy", "silent", "concurrent", "code"),
    [("maybe", False, False, "InvalidRequest"), ("allow", True, True, "InvalidBootstrapConfig")],
)
def test_bad_bootstrap_options_are_400(
    policy: str, silent: bool, concurrent: bool, code: str
) -> None:
    err = refused(BootstrapOptions.parse, policy, silent, concurrent)
    assert (err.http_status, err.error_code) == (400, code)


def test_force_stop_before_the_actor_began_forgets_the_bootstrap_options() -> None:
    rec = record(resources_desired="Provisioned", bootstrap_policy="reject")
    changes = state_machine.on_stop(rec, True)
    assert changes is not None and changes["bootstrap_policy"] is None


def test_start_with_error_needs_dismissal() -> None:
    rec = record(deployment_error={"message": "boom", "error_code": "X", "details": None})
    err = refused(state_machine.on_start, rec, "running", False)
    assert err.error_code == "CannotStartWithUndismissedError"
    changes = state_machine.on_start(rec, "running", True)
    assert changes is not None and changes["deployment_error"] is None


def test_start_refusals_of_program_and_storage() -> None:
    err = refused(state_machine.on_start, record(program_status="SqlError"), "running", True)
    assert err.error_code == "CannotStartWithCompilationError"
    err = refused(state_machine.on_start, record(storage_status="Clearing"), "running", True)
    assert err.error_code == "CannotStartWhileClearingStorage"


@pytest.mark.parametrize(
    "rec",
    [
        record(),
        record(resources_status="Provisioning", resources_desired="Provisioned"),
        running(),
        running(runtime_desired="Suspended"),
        record(resources_status="Stopping", resources_desired="Stopped"),
    ],
)
def test_force_stop_is_accepted_in_every_state(rec: PipelineRecord) -> None:
    changes = state_machine.on_stop(rec, force=True)
    if rec.resources_desired == "Stopped":
        assert changes is None  # already on its way: a repeat changes nothing
    else:
        assert changes == {"resources_desired": "Stopped", "runtime_desired": None}


def test_suspend_of_a_deployed_pipeline_and_fallbacks() -> None:
    assert state_machine.on_stop(running(), force=False) == {"runtime_desired": "Suspended"}
    provisioning = record(resources_status="Provisioning", resources_desired="Provisioned")
    assert state_machine.on_stop(provisioning, force=False) == {
        "resources_desired": "Stopped",
        "runtime_desired": None,
    }
    # Without storage the suspend is accepted; the runtime refuses it (Feldera's way).
    no_storage = running(runtime_config={"storage": None})
    assert state_machine.on_stop(no_storage, force=False) == {"runtime_desired": "Suspended"}
    err = refused(state_machine.on_stop, running(runtime_status="Unavailable"), False)
    assert (err.http_status, err.error_code) == (503, "PipelineInteractionUnreachable")


def test_pause_resume_rules() -> None:
    assert state_machine.on_pause(running()) == {"runtime_desired": "Paused"}
    assert state_machine.on_resume(running()) is None
    err = refused(state_machine.on_pause, running(runtime_desired="Suspended"))
    assert (err.http_status, err.error_code) == (400, "InvalidTransition")
    err = refused(state_machine.on_pause, record())
    assert (err.http_status, err.error_code) == (503, "PipelineInteractionNotDeployed")
    err = refused(state_machine.on_resume, running(runtime_status="Unavailable"))
    assert (err.http_status, err.error_code) == (503, "PipelineInteractionUnreachable")


def test_delete_clear_dismiss_preconditions() -> None:
    assert refused(state_machine.check_delete, running()).error_code == (
        "DeleteRestrictedToFullyStopped"
    )
    in_use = record(storage_status="InUse")
    assert refused(state_machine.check_delete, in_use).error_code == (
        "DeleteRestrictedToClearedStorage"
    )
    assert state_machine.on_clear(in_use) == {"storage_status": "Clearing"}
    err = refused(state_machine.on_clear, running(storage_status="InUse"))
    assert err.error_code == "StorageStatusImmutableUnlessStopped"
    errored = running(deployment_error={"message": "x", "error_code": "X", "details": None})
    assert refused(state_machine.on_dismiss_error, errored).error_code == (
        "DismissErrorRestrictedToFullyStopped"
    )
    assert state_machine.on_dismiss_error(record()) is None


def test_edit_rules() -> None:
    in_use = record(storage_status="InUse")
    # With storage in use the program and the description may change (the next
    # start bootstraps the program), as in Feldera.
    state_machine.check_edit(in_use, {"description": "d", "program_code": "x"})
    cfg = dict(in_use.runtime_config)
    state_machine.check_edit(in_use, {"runtime_config": {**cfg, "provisioning_timeout_secs": 9}})
    changed = {
        **cfg,
        "workers": 7,
        "resources": {"storage_mb_max": 5},
        "clock_timezone_offset": 60,
    }
    err = refused(state_machine.check_edit, in_use, {"name": "n", "runtime_config": changed})
    assert err.error_code == "EditRestrictedToClearedStorage"
    assert err.details == {
        "not_allowed": [
            "`name`",
            "`runtime_config.workers`",
            "`runtime_config.resources.storage_mb_max`",
            "`runtime_config.clock_timezone_offset`",
        ]
    }
    # Cleared storage: anything goes while fully stopped.
    state_machine.check_edit(record(), {"name": "n", "runtime_config": changed})
    # Metadata at any time; anything else only when fully stopped.
    state_machine.check_edit(running(), {"description": "d", "tags": ("a",)})
    assert refused(state_machine.check_edit, running(), {"program_code": ""}).error_code == (
        "UpdateRestrictedToStopped"
    )


def test_evolve_keeps_derived_statuses_and_since() -> None:
    rec = record()
    provisioning = evolve(rec, at=10, resources_status="Provisioning")
    assert provisioning.deployment_status == "Provisioning"
    assert provisioning.deployment_status_since == 10
    assert provisioning.refresh_version == rec.refresh_version + 1
    provisioned = evolve(
        provisioning, at=20, resources_status="Provisioned", runtime_status="Initializing"
    )
    assert provisioned.deployment_status == "Initializing"
    assert provisioned.runtime_status_since == 20
    stopped = evolve(provisioned, at=30, resources_status="Stopped", runtime_status=None)
    assert (stopped.deployment_status, stopped.runtime_status_since) == ("Stopped", None)
