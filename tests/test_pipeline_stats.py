"""GET /v0/pipelines/{name}/stats: the runtime's figures in Feldera's shape.

Feldera: feldera-types adapter_stats.rs (ExternalControllerStatus) for the
shape; a pipeline that is not deployed answers 503
PipelineInteractionNotDeployed (pipeline-manager runner interaction).
"""

from __future__ import annotations

import uuid

import pytest
from stopcock.contract.statuses import Runtime
from stopcock.internal.v1 import runtime_service_pb2 as rpb
from stopcock.manager.api import stats

from tests.support import Stack
from tests.test_rest_pipelines import assert_error

# What Feldera's Python SDK reads (stats.py from_dict, pipeline.py waits).
SDK_FIELDS = {
    "state",
    "incarnation_uuid",
    "start_time",
    "transaction_status",
    "total_input_records",
    "total_processed_records",
    "total_completed_records",
    "buffered_input_records",
    "pipeline_complete",
}


def reply(**fields: object) -> rpb.GetStatsResponse:
    base: dict[str, object] = {
        "incarnation_uuid": str(uuid.uuid4()),
        "state": rpb.RUNTIME_STATE_RUNNING,
        "start_time": 1_700_000_000,
    }
    return rpb.GetStatsResponse(**{**base, **fields})  # type: ignore[arg-type]


def test_render_counts_applied_records_as_received_processed_and_completed() -> None:
    body = stats.render(reply(processed_records=7, rss_bytes=10, cpu_msecs=3, storage_bytes=5))
    assert set(body) == {
        "global_metrics",
        "suspend_error",
        "checkpoint_activity",
        "permanent_checkpoint_errors",
        "inputs",
        "outputs",
    }
    m = body["global_metrics"]
    assert set(m) >= SDK_FIELDS
    assert (m["total_input_records"], m["total_processed_records"]) == (7, 7)
    assert (m["total_completed_records"], m["buffered_input_records"]) == (7, 0)
    assert (m["rss_bytes"], m["cpu_msecs"], m["storage_bytes"]) == (10, 3, 5)
    assert (m["state"], m["pipeline_complete"], m["start_time"]) == ("Running", True, 1_700_000_000)


def test_render_maps_states_onto_felderas_three() -> None:
    for state, expected in (
        (Runtime.RUNNING, "Running"),
        (Runtime.PAUSED, "Paused"),
        (Runtime.INITIALIZING, "Paused"),
        (Runtime.SUSPENDED, "Terminated"),
    ):
        wire = rpb.RuntimeState.Value(f"RUNTIME_STATE_{state.value.upper()}")
        assert stats.render(reply(state=wire))["global_metrics"]["state"] == expected


def test_an_ingest_being_applied_keeps_the_pipeline_incomplete() -> None:
    assert stats.render(reply(ingests_in_flight=1))["global_metrics"]["pipeline_complete"] is False


@pytest.mark.e2e
def test_not_deployed_unknown_and_wrong_method(stack: Stack, name: str) -> None:
    stack.create(name)
    r = stack.rest.get(f"/v0/pipelines/{name}/stats")
    assert_error(
        r,
        503,
        "PipelineInteractionNotDeployed",
        {"pipeline_name": name, "status": "Stopped", "desired_status": "Stopped"},
    )
    assert r.headers["retry-after"] == "5"
    assert_error(stack.rest.get("/v0/pipelines/no-such-pipeline/stats"), 404, "UnknownPipelineName")
    r = stack.rest.post(f"/v0/pipelines/{name}/stats")
    assert_error(r, 405, "MethodNotAllowed")
    assert r.headers["allow"] == "GET"
    r = stack.rest.get(f"/v0/pipelines/{name}/stats", params={"x": "1"})
    assert_error(r, 400, "InvalidRequest")


@pytest.mark.e2e
def test_running_pipeline_reports_its_records_and_incarnation(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    r = stack.rest.get(f"/v0/pipelines/{name}/stats")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    before = r.json()["global_metrics"]
    assert set(before) >= SDK_FIELDS
    assert before["state"] == "Running" and before["pipeline_complete"] is True
    assert before["rss_bytes"] > 0 and before["start_time"] > 0
    assert r.json()["inputs"] == [] and r.json()["outputs"] == []

    assert stack.ingest(name, [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]).status_code == 200
    after = stack.rest.get(f"/v0/pipelines/{name}/stats").json()["global_metrics"]
    assert after["total_processed_records"] == before["total_processed_records"] + 2
    assert after["total_input_records"] == after["total_processed_records"]
    # The incarnation is the runtime process's, as /checkpoint reports it.
    checkpoint = stack.post(name, "checkpoint")
    assert checkpoint.status_code == 200, checkpoint.text
    assert after["incarnation_uuid"] == checkpoint.json()["incarnation_uuid"]
    stack.post(name, "pause")
    stack.wait_status(name, "Paused")
    paused = stack.rest.get(f"/v0/pipelines/{name}/stats").json()["global_metrics"]
    assert paused["state"] == "Paused"
    stack.force_stop(name)
