"""GET /v0/cluster_healthz: Feldera's health of the installation's parts.

Feldera (pipeline-manager api/endpoints/cluster.rs, get_cluster_health)
answers {all_healthy, api, compiler, runner}, each part {healthy, message,
unchanged_since, checked_at}: 200 when all are healthy, else 503 with the same
body. Its Python SDK reads `all_healthy` (rest/_httprequests.py,
_check_cluster_health) to tell a passing 502 from an outage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from stopcock.manager.api.servicer import PipelineServicer
from stopcock.manager.control.health import ClusterHealth, HealthHistory
from stopcock.manager.control.runner import LocalProcessRunner
from stopcock.v1 import pipeline_service_pb2 as pb
from stopcock.v1 import pipeline_service_pb2_grpc as pb_grpc

from tests.support import Stack
from tests.test_rest_pipelines import assert_error

PARTS = ("api", "compiler", "runner")
PART_FIELDS = {"healthy", "message", "unchanged_since", "checked_at"}


def assert_rfc3339(text: str) -> None:
    assert text.endswith("Z"), text
    datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.e2e
def test_rest_answers_feldera_shape(stack: Stack) -> None:
    r = stack.rest.get("/v0/cluster_healthz")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"all_healthy", *PARTS}
    assert body["all_healthy"] is True
    for part in PARTS:
        assert set(body[part]) == PART_FIELDS, body[part]
        assert body[part]["healthy"] is True
        assert body[part]["message"]
        assert_rfc3339(body[part]["unchanged_since"])
        assert_rfc3339(body[part]["checked_at"])
        assert body[part]["unchanged_since"] <= body[part]["checked_at"]


@pytest.mark.e2e
def test_other_methods_and_bad_queries_get_the_contract_error(stack: Stack) -> None:
    r = stack.rest.post("/v0/cluster_healthz")
    assert_error(r, 405, "MethodNotAllowed")
    assert r.headers["allow"] == "GET"
    assert_error(stack.rest.get("/v0/cluster_healthz", params={"x": "1"}), 400, "InvalidRequest")


async def test_history_keeps_the_time_of_the_last_change() -> None:
    history = HealthHistory()
    ok = (True, "fine")
    first = await history.record({"api": ok, "compiler": ok, "runner": ok})
    second = await history.record({"api": ok, "compiler": ok, "runner": (False, "no")})
    third = await history.record({"api": ok, "compiler": ok, "runner": (False, "no")})
    assert first.all_healthy and not second.all_healthy and not third.all_healthy
    # The api never changed: its `unchanged_since` stays at the first check.
    assert third.api.unchanged_since == first.api.checked_at
    # The runner turned unhealthy at the second check, and stayed so.
    assert third.runner.unchanged_since == second.runner.checked_at
    assert (third.runner.healthy, third.runner.message) == (False, "no")


def test_runner_reports_what_keeps_it_from_spawning(tmp_path: Path) -> None:
    assert LocalProcessRunner(tmp_path).health_problem() is None
    missing = tmp_path / "missing"
    problem = LocalProcessRunner(missing).health_problem()
    assert problem is not None and str(missing) in problem
    problem = LocalProcessRunner(tmp_path, python=str(tmp_path / "no-python")).health_problem()
    assert problem is not None and "no-python" in problem


class UnhealthyLifecycle:
    """A lifecycle whose runner cannot spawn."""

    async def cluster_health(self) -> ClusterHealth:
        history = HealthHistory()
        ok = (True, "fine")
        return await history.record({"api": ok, "compiler": ok, "runner": (False, "disk")})


@pytest.fixture
async def unhealthy() -> AsyncIterator[pb_grpc.PipelineServiceAsyncStub]:
    server = grpc.aio.server()
    pb_grpc.add_PipelineServiceServicer_to_server(
        PipelineServicer(UnhealthyLifecycle(), None),  # type: ignore[arg-type]
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield pb_grpc.PipelineServiceStub(ch)
    await server.stop(None)


async def test_an_unhealthy_part_is_a_503_with_the_same_body(
    unhealthy: pb_grpc.PipelineServiceAsyncStub,
) -> None:
    call = unhealthy.GetClusterHealth(pb.GetClusterHealthRequest())
    reply = await call
    # The REST status travels as initial metadata, for Envoy's Lua filter.
    initial: Any = await call.initial_metadata()
    assert dict(initial)["x-http-status"] == "503"
    assert not reply.all_healthy and reply.api.healthy and not reply.runner.healthy
    assert reply.runner.message == "disk"
    assert_rfc3339(reply.runner.checked_at)
