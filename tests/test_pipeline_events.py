"""Pipeline events (`GET /v0/pipelines/{name}/events[/{event_id}]`), in Feldera's shape.

Through Envoy, on SQLite and on PostgreSQL replicas, and through the
`feldera` SDK's `Pipeline.events` / `Pipeline.event`.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

import pytest
from feldera import FelderaClient, Pipeline

from tests.support import Stack
from tests.test_rest_pipelines import assert_error

pytestmark = [pytest.mark.e2e, pytest.mark.both_stores]

STATUS_FIELDS = {
    "event_id",
    "recorded_at",
    "deployment_resources_status",
    "deployment_resources_desired_status",
    "deployment_runtime_status",
    "deployment_runtime_desired_status",
    "deployment_has_error",
    "program_status",
    "storage_status",
}
DETAIL_FIELDS = {
    "deployment_resources_status_details",
    "deployment_runtime_status_details",
    "deployment_error",
    "storage_status_details",
}


def events(stack: Stack, name: str, **params: str) -> list[dict[str, Any]]:
    r = stack.rest.get(f"/v0/pipelines/{name}/events", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    listed: list[dict[str, Any]] = r.json()
    return listed


def event(stack: Stack, name: str, event_id: str, **params: str) -> dict[str, Any]:
    r = stack.rest.get(f"/v0/pipelines/{name}/events/{event_id}", params=params)
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


def statuses(e: dict[str, Any]) -> tuple[Any, ...]:
    return (
        e["deployment_resources_status"],
        e["deployment_resources_desired_status"],
        e["deployment_runtime_status"],
        e["deployment_runtime_desired_status"],
        e["deployment_has_error"],
        e["storage_status"],
    )


def test_events_follow_the_lifecycle_newest_first(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    assert stack.post(name, "pause").status_code == 202
    stack.wait_status(name, "Paused")
    assert stack.post(name, "resume").status_code == 202
    stack.wait_status(name, "Running")
    stack.force_stop(name)

    listed = events(stack, name)
    assert listed == events(stack, name, selector="status")  # the default
    full = events(stack, name, selector="all")
    assert [e["event_id"] for e in full] == [e["event_id"] for e in listed]
    for e in listed:
        assert set(e) == STATUS_FIELDS
    for e in full:
        assert set(e) == STATUS_FIELDS | DETAIL_FIELDS
        assert (e["deployment_runtime_status"] is None) == (
            e["deployment_runtime_status_details"] is None
        )
    times = [datetime.fromisoformat(e["recorded_at"].replace("Z", "+00:00")) for e in listed]
    assert times == sorted(times, reverse=True)
    # Consecutive events differ in some status (one event per change).
    assert all(a != b for a, b in itertools.pairwise(listed))

    # Oldest first, the walk of the lifecycle (Initializing and other passing
    # states may or may not be seen: only the order of these is asserted).
    walk = [statuses(e) for e in reversed(listed)]
    milestones = [
        ("Stopped", "Stopped", None, None, False, "Cleared"),
        ("Provisioned", "Provisioned", "Running", "Running", False, "InUse"),
        ("Provisioned", "Provisioned", "Paused", "Paused", False, "InUse"),
        ("Provisioned", "Provisioned", "Running", "Running", False, "InUse"),
        ("Stopped", "Stopped", None, None, False, "InUse"),
    ]
    rest = iter(walk)
    assert all(m in rest for m in milestones), walk  # in this order
    assert walk[-1] == milestones[-1]

    # One by one, by id and as `latest`, in both selectors.
    assert [event(stack, name, e["event_id"]) for e in listed] == listed
    assert [event(stack, name, e["event_id"], selector="all") for e in listed] == full
    assert event(stack, name, "latest") == listed[0]
    assert event(stack, name, "latest", selector="all") == full[0]


def test_event_errors_are_felderas(stack: Stack, name: str) -> None:
    stack.create(name)
    body = assert_error(
        stack.rest.get(f"/v0/pipelines/{name}/events/not-a-uuid"), 400, "InvalidUuidParam"
    )
    assert body["details"]["value"] == "not-a-uuid"
    unknown = "00000000-0000-4000-8000-000000000000"
    assert_error(
        stack.rest.get(f"/v0/pipelines/{name}/events/{unknown}"),
        404,
        "UnknownPipelineMonitorEvent",
        {"event_id": unknown},
    )
    assert_error(
        stack.rest.get(f"/v0/pipelines/{name}/events", params={"selector": "some"}),
        400,
        "InvalidSelector",
    )
    assert_error(stack.rest.get("/v0/pipelines/nope-nope/events"), 404, "UnknownPipelineName")
    assert_error(
        stack.rest.get("/v0/pipelines/nope-nope/events/latest"), 404, "UnknownPipelineName"
    )
    # A new pipeline's events: its program compiling, then compiled.
    listed = events(stack, name)
    assert {statuses(e) for e in listed} == {("Stopped", "Stopped", None, None, False, "Cleared")}
    assert listed[0]["program_status"] == "Success"
    assert listed[-1]["program_status"] == "Pending"
    r = stack.rest.post(f"/v0/pipelines/{name}/events")
    assert r.status_code == 405


def test_the_feldera_sdk_reads_events(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    client = FelderaClient(f"http://127.0.0.1:{stack.rest_port}", timeout=30)
    pipeline = Pipeline.get(name, client)
    listed = pipeline.events()
    assert listed == events(stack, name)
    assert pipeline.event("latest") == listed[0]
    latest = pipeline.event(listed[-1]["event_id"], selector="all")
    assert set(latest) == STATUS_FIELDS | DETAIL_FIELDS
    stack.force_stop(name)
