"""WatchPipeline: every persisted change, pushed in order, resumable."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest
from stopcock.v1 import pipeline_service_pb2 as pb

from tests.support import Stack
from tests.test_rest_pipelines import assert_error

pytestmark = [pytest.mark.e2e, pytest.mark.both_stores]


def test_watch_delivers_every_transition_of_a_start_stop_cycle(stack: Stack, name: str) -> None:
    stack.create(name)
    seen: list[Any] = []
    call = stack.stub.WatchPipeline(pb.WatchPipelineRequest(name=name, selector="status"))
    done = threading.Event()

    def follow() -> None:
        ran = False
        for change in call:
            seen.append(change)
            ran = ran or change.pipeline.deployment_status == "Running"
            if ran and change.pipeline.deployment_status == "Stopped":
                done.set()
                return

    follower = threading.Thread(target=follow)
    follower.start()
    stack.start(name)
    stack.force_stop(name)
    assert done.wait(30)
    call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves it untyped
    follower.join(10)
    versions = [c.pipeline.refresh_version for c in seen]
    assert versions == list(range(versions[0], versions[0] + len(versions)))  # no gap
    assert all(c.resumed for c in seen[1:]) and not seen[0].resumed
    statuses = [c.pipeline.deployment_status for c in seen]
    compact = [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]]
    assert compact == ["Stopped", "Provisioning", "Initializing", "Running", "Stopping", "Stopped"]


def test_watch_resumes_after_a_version(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    stack.force_stop(name)
    first = stack.get(name, "status")["refresh_version"]
    stack.start(name)
    call = stack.stub.WatchPipeline(
        pb.WatchPipelineRequest(name=name, after_refresh_version=first, selector="status")
    )
    replayed = []
    for change in call:
        replayed.append(change)
        if change.pipeline.deployment_status == "Running":
            break
    call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves it untyped
    assert replayed[0].resumed and replayed[0].pipeline.refresh_version == first + 1
    assert [c.pipeline.deployment_status for c in replayed][-1] == "Running"
    stack.force_stop(name)


def test_watch_over_rest_is_ndjson(stack: Stack, name: str) -> None:
    stack.create(name)
    with stack.rest.stream(
        "GET", f"/v0/pipelines/{name}/watch", params={"selector": "status"}
    ) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        first = json.loads(next(lines))
        assert first["pipeline"]["name"] == name and first["resumed"] is False
        assert stack.post(name, "start").status_code == 202
        second = json.loads(next(lines))
        assert second["resumed"] is True
        assert second["pipeline"]["refresh_version"] == first["pipeline"]["refresh_version"] + 1
        assert second["pipeline"]["deployment_desired_status"] == "Running"
    stack.force_stop(name)
    assert_error(stack.rest.get("/v0/pipelines/nope/watch"), 404, "UnknownPipelineName")


def test_a_watch_from_the_current_version_sends_its_headers_at_once(
    stack: Stack, name: str
) -> None:
    stack.create(name)
    version = stack.get(name)["refresh_version"]
    url = f"http://127.0.0.1:{stack.rest_port}/v0/pipelines/{name}/watch"
    # Nothing changes until the start below: the headers must come first, as
    # an HTTP client (a browser's fetch()) awaits them before reading.
    with (
        httpx.Client(timeout=httpx.Timeout(10.0)) as client,
        client.stream("GET", url, params={"after_refresh_version": str(version)}) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/")
        assert stack.post(name, "start").status_code == 202
        change = json.loads(next(r.iter_lines()))
        assert change["pipeline"]["refresh_version"] == version + 1
    stack.force_stop(name)
