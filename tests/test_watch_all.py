"""WatchPipelines (`GET /v0/watch`): every pipeline, then each change, pushed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from stopcock.v1 import pipeline_service_pb2 as pb

from tests.support import Stack
from tests.test_rest_pipelines import assert_error

pytestmark = [pytest.mark.e2e, pytest.mark.both_stores]


def until_synced(lines: Iterator[str]) -> dict[str, dict[str, Any]]:
    """The snapshot (by name) the stream sends before `synced`."""
    seen: dict[str, dict[str, Any]] = {}
    for line in lines:
        event = json.loads(line)
        if event == {"synced": True}:
            return seen
        assert set(event) == {"pipeline"}, event
        seen[event["pipeline"]["name"]] = event["pipeline"]
    raise AssertionError("the stream ended before synced")


def next_about(lines: Iterator[str], pipeline_id: str) -> dict[str, Any]:
    """The next event about the pipeline (the shared stack has others)."""
    for line in lines:
        event = json.loads(line)
        about = event.get("pipeline") or event.get("deleted") or {}
        if about.get("id") == pipeline_id:
            return dict(event)
    raise AssertionError("the stream ended")


def test_rest_snapshot_changes_renames_and_deletion(stack: Stack, name: str) -> None:
    created = stack.create(name)
    with stack.rest.stream("GET", "/v0/watch") as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        snapshot = until_synced(lines)
        assert snapshot[name]["id"] == created["id"]
        # selector=status by default: the list's fields, not the program.
        assert "program_code" not in snapshot[name]
        assert snapshot[name]["deployment_status"] == "Stopped"

        assert stack.post(name, "start").status_code == 202
        status = ""
        while status != "Running":  # each change pushed, in order, until Running
            status = next_about(lines, created["id"])["pipeline"]["deployment_status"]
        stack.force_stop(name)
        while next_about(lines, created["id"])["pipeline"]["deployment_status"] != "Stopped":
            pass

        assert stack.post(name, "clear").status_code == 202  # a rename needs cleared storage
        while next_about(lines, created["id"])["pipeline"]["storage_status"] != "Cleared":
            pass
        renamed = f"{name}-r"
        r2 = stack.rest.patch(f"/v0/pipelines/{name}", json={"name": renamed})
        assert r2.status_code == 200, r2.text
        # The same id under its new name: a client updates its row. (With
        # replicas, a version may come twice: once written, once notified.)
        event = next_about(lines, created["id"])
        while event["pipeline"]["refresh_version"] < r2.json()["refresh_version"]:
            event = next_about(lines, created["id"])
        assert event["pipeline"]["name"] == renamed

        assert stack.rest.delete(f"/v0/pipelines/{renamed}").status_code == 200
        deleted = next_about(lines, created["id"])
        while "deleted" not in deleted:  # the delete's own status write may come first
            deleted = next_about(lines, created["id"])
        assert deleted == {"deleted": {"id": created["id"], "name": renamed}}


def test_a_new_stream_sends_only_what_exists(stack: Stack, name: str) -> None:
    created = stack.create(name)
    assert stack.rest.delete(f"/v0/pipelines/{name}").status_code == 200
    with stack.rest.stream("GET", "/v0/watch") as r:
        snapshot = until_synced(r.iter_lines())
    assert name not in snapshot and created["id"] not in {p["id"] for p in snapshot.values()}


def test_grpc_stream_with_the_full_selector(stack: Stack, name: str) -> None:
    stack.create(name)
    call = stack.stub.WatchPipelines(pb.WatchPipelinesRequest(selector="all"))
    try:
        found = None
        for event in call:
            if event.WhichOneof("event") == "synced":
                break
            assert event.WhichOneof("event") == "pipeline"
            if event.pipeline.name == name:
                found = event.pipeline
        assert found is not None and found.program_code
    finally:
        call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves it untyped


def test_a_bad_selector_is_refused_before_the_stream(stack: Stack) -> None:
    assert_error(stack.rest.get("/v0/watch", params={"selector": "most"}), 400, "InvalidSelector")
    with pytest.raises(grpc.RpcError) as info:
        next(iter(stack.stub.WatchPipelines(pb.WatchPipelinesRequest(selector="most"))))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_whoami_without_authentication(stack: Stack) -> None:
    r = stack.rest.get("/v0/whoami")
    assert r.status_code == 200
    assert r.json() == {"role": "write", "authentication": False}
    assert_error(stack.rest.post("/v0/whoami"), 405, "MethodNotAllowed")
