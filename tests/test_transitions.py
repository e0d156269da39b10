"""The resource transition table (stopcock.manager.domain.transitions)."""

from __future__ import annotations

import dataclasses

import pytest
from stopcock.manager.domain import transitions
from stopcock.manager.domain.model import (
    PROVISIONED,
    PROVISIONING,
    STOPPED,
    STOPPING,
    PipelineRecord,
    evolve,
    new_record,
)


def record() -> PipelineRecord:
    rec = new_record(
        pipeline_id="p",
        name="p",
        description="",
        runtime_config={},
        program_code="",
        udf_rust="",
        udf_toml="",
        program_config={},
        tags=(),
        at=0,
    )
    return evolve(rec, at=1, resources_desired=PROVISIONED)


def test_the_table_is_the_contracts_automaton() -> None:
    assert set(transitions.TABLE) == {
        (STOPPED, PROVISIONING),
        (PROVISIONING, PROVISIONED),
        (PROVISIONING, STOPPING),
        (PROVISIONED, STOPPING),
        (STOPPING, STOPPED),
    }


def test_entering_stopping_always_sets_desired_stopped() -> None:
    rec = evolve(record(), at=2, **transitions.changes(record(), PROVISIONING, deployment_id="d"))
    stopping = transitions.changes(rec, STOPPING)
    assert stopping["resources_desired"] == STOPPED
    assert stopping["runtime_status_details"] is None


@pytest.mark.parametrize(("start", "to"), [(STOPPED, PROVISIONED), (STOPPED, STOPPING)])
def test_a_missing_edge_is_refused(start: str, to: str) -> None:
    rec = evolve(record(), at=2, resources_status=start)
    with pytest.raises(transitions.IllegalResourceTransition):
        transitions.changes(rec, to)
    with pytest.raises(transitions.IllegalResourceTransition):
        transitions.check(rec, evolve(rec, at=3, resources_status=to))


def test_a_write_into_stopping_must_set_desired_stopped() -> None:
    rec = evolve(record(), at=2, resources_status=PROVISIONED)
    bad = evolve(rec, at=3, resources_status=STOPPING)  # desired still Provisioned
    with pytest.raises(transitions.IllegalResourceTransition):
        transitions.check(rec, bad)


def test_the_bootstrap_options_end_with_the_deployment() -> None:
    stopping = dataclasses.replace(
        record(),
        resources_status="Stopping",
        bootstrap_policy="reject",
        silent_bootstrap=True,
        bootstrap_approved=True,
        resources_status_details={"process": "has not exited"},
    )
    changes = transitions.changes(stopping, "Stopped")
    assert changes["bootstrap_policy"] is None
    assert changes["silent_bootstrap"] is False and changes["bootstrap_approved"] is False
    assert changes["resources_status_details"] is None


def test_a_persisted_approval_makes_a_respawned_runtime_allow() -> None:
    from stopcock.manager.control.actor import bootstrap_policy

    base = dataclasses.replace(record(), bootstrap_policy="await_approval")
    assert bootstrap_policy(base) == "await_approval"
    assert bootstrap_policy(dataclasses.replace(base, bootstrap_approved=True)) == "allow"
    assert bootstrap_policy(dataclasses.replace(base, bootstrap_policy=None)) == "await_approval"
