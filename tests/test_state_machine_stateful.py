"""The transition rules under random sequences of requests and runtime events.

A hypothesis state machine drives one pipeline record through API requests
(the pure rules of stopcock.manager.domain.state_machine) interleaved with what the
actor does (provisioning steps, runtime reports, deaths, kills), applied with
model.evolve exactly as the actor applies them — resource transitions from
the actor's own table (stopcock.manager.domain.transitions), every write
checked against it — and checks the contract's invariants after every step.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from stopcock.manager.domain import errors, state_machine, transitions
from stopcock.manager.domain.model import (
    PROVISIONED,
    PROVISIONING,
    STOPPED,
    STOPPING,
    PipelineRecord,
    derived_desired,
    derived_status,
    evolve,
    new_record,
)


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        rec = new_record(
            pipeline_id="p",
            name="p",
            description="",
            runtime_config={"storage": {}},
            program_code="",
            udf_rust="",
            udf_toml="",
            program_config={},
            tags=(),
            at=0,
        )
        self.rec: PipelineRecord = evolve(rec, at=1, program_status="Success")
        self.clock = 1
        self.versions = [self.rec.refresh_version]

    def apply(self, changes: dict[str, Any] | None) -> None:
        if changes:
            self.clock += 1
            new = evolve(self.rec, at=self.clock, **changes)
            transitions.check(self.rec, new)  # as every write of the manager is
            self.rec = new
            self.versions.append(self.rec.refresh_version)

    def move(self, to: str, **extra: Any) -> None:
        """A resource transition, from the one table the actor uses."""
        self.apply(transitions.changes(self.rec, to, **extra))

    # -- requests --------------------------------------------------------

    @rule(initial=st.sampled_from(["running", "paused", "standby"]), dismiss=st.booleans())
    def start(self, initial: str, dismiss: bool) -> None:
        stopping = state_machine.is_stopping(self.rec)
        try:
            self.apply(state_machine.on_start(self.rec, initial, dismiss))
        except errors.ApiError as err:
            if stopping and initial != "standby":
                assert err.error_code == "IllegalPipelineAction"
            return
        assert not stopping, "a start was accepted while a stop was under way"

    @rule(force=st.booleans())
    def stop(self, force: bool) -> None:
        try:
            self.apply(state_machine.on_stop(self.rec, force))
        except errors.ApiError as err:
            assert not force, "a force stop is accepted in every state"
            assert err.error_code == "PipelineInteractionUnreachable"
            return
        if force:
            assert self.rec.resources_desired == STOPPED

    @rule(pause=st.booleans())
    def pause_or_resume(self, pause: bool) -> None:
        rule_ = state_machine.on_pause if pause else state_machine.on_resume
        try:
            self.apply(rule_(self.rec))
        except errors.ApiError as err:
            assert err.http_status in (400, 503)

    @rule()
    def dismiss_or_clear(self) -> None:
        for rule_ in (state_machine.on_dismiss_error, state_machine.on_clear):
            try:
                self.apply(rule_(self.rec))
            except errors.ApiError as err:
                assert not self.rec.fully_stopped, err.error_code

    # -- what the actor does ------------------------------------------------

    @precondition(lambda self: self.rec.resources_desired == PROVISIONED)
    @rule()
    def provision_step(self) -> None:
        if self.rec.resources_status == STOPPED:
            self.move(PROVISIONING, deployment_id="d")
        elif self.rec.resources_status == PROVISIONING:
            self.move(PROVISIONED, deployment_location="127.0.0.1:1")
        elif self.rec.resources_status == PROVISIONED and self.rec.runtime_desired:
            wanted = self.rec.runtime_desired
            self.apply({"runtime_status": wanted})
            if wanted == "Suspended":
                self.move(STOPPING)  # the suspend completed

    @precondition(lambda self: self.rec.resources_status in (PROVISIONING, PROVISIONED))
    @rule()
    def runtime_dies(self) -> None:
        self.move(STOPPING, deployment_error={"message": "x", "error_code": "E", "details": None})

    @precondition(lambda self: self.rec.resources_desired == STOPPED)
    @rule()
    def stop_step(self) -> None:
        if self.rec.resources_status in (PROVISIONING, PROVISIONED):
            self.move(STOPPING)
        elif self.rec.resources_status == STOPPING:
            self.move(STOPPED)
        elif self.rec.storage_status == "Clearing":
            self.apply({"storage_status": "Cleared"})

    # -- invariants ---------------------------------------------------------

    @invariant()
    def derived_statuses_hold(self) -> None:
        rec = self.rec
        assert rec.deployment_status == derived_status(rec.resources_status, rec.runtime_status)
        assert rec.deployment_desired_status == derived_desired(
            rec.resources_desired, rec.runtime_desired
        )

    @invariant()
    def stopping_means_desired_stopped(self) -> None:
        if self.rec.resources_status == STOPPING:
            assert self.rec.resources_desired == STOPPED

    @invariant()
    def storage_changes_only_when_fully_stopped(self) -> None:
        if self.rec.storage_status == "Clearing":
            assert self.rec.fully_stopped

    @invariant()
    def refresh_version_only_grows(self) -> None:
        assert self.versions == sorted(set(self.versions))

    @invariant()
    def since_fields_follow_their_status(self) -> None:
        rec = self.rec
        assert (rec.runtime_status is None) == (rec.runtime_status_since is None)
        assert rec.deployment_status_since <= self.clock


Lifecycle.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestLifecycle = Lifecycle.TestCase
