"""The resource transition table (stopcock.manager.domain.transitions)."""

from __future__ import annotations

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
