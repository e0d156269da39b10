"""Pipeline logs: the runtime's output, served over REST and gRPC, followed live."""

from __future__ import annotations

import threading

import pytest
from stopcock.v1 import pipeline_service_pb2 as pb

from tests.support import Stack
from tests.test_rest_pipelines import assert_error

pytestmark = pytest.mark.e2e


def test_logs_of_a_runtime(stack: Stack, name: str) -> None:
    stack.create(name)
    r = stack.rest.get(f"/v0/pipelines/{name}/logs")
    assert (r.status_code, r.text) == (200, "")  # never ran: an empty log
    assert r.headers["content-type"].startswith("text/plain")
    stack.start(name)
    r = stack.rest.get(f"/v0/pipelines/{name}/logs")
    assert r.status_code == 200
    assert "status Initializing -> Running" in r.text
    stack.force_stop(name)
    assert_error(stack.rest.get("/v0/pipelines/nope/logs"), 404, "UnknownPipelineName")


def test_follow_streams_new_lines_until_the_runtime_is_gone(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name, initial="paused")
    call = stack.stub.GetPipelineLogs(pb.GetPipelineLogsRequest(name=name, follow=True))
    received: list[str] = []
    ended = threading.Event()

    def follow() -> None:
        for chunk in call:
            received.append(chunk.body.data.decode())
        ended.set()

    follower = threading.Thread(target=follow)
    follower.start()
    assert stack.post(name, "resume").status_code == 202
    stack.wait_status(name, "Running")
    stack.force_stop(name)  # the stream ends once the runtime is gone
    assert ended.wait(30), "the followed log did not end with the runtime"
    follower.join(5)
    text = "".join(received)
    assert "status Initializing -> Paused" in text
    assert "status Paused -> Running" in text  # written after the follow began
