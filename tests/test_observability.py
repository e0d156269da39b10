"""Metrics move with what happens; the manager logs JSON lines with context."""

from __future__ import annotations

import json
import os
import signal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Stack, wait_until
from tests.test_checkpoints import rows

pytestmark = pytest.mark.e2e


def scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(stack: Stack, name: str, **labels: str) -> float:
    return scrape(stack).get((name, tuple(sorted(labels.items()))), 0.0)


def test_rpc_counters_and_latency_move_with_requests(stack: Stack, name: str) -> None:
    stack.create(name)
    before = metric(stack, "stopcock_rpc_requests_total", method="GetPipeline", code="OK")
    latency_before = metric(stack, "stopcock_rpc_duration_seconds_count", method="GetPipeline")
    for _ in range(5):
        stack.get(name)
    assert metric(stack, "stopcock_rpc_requests_total", method="GetPipeline", code="OK") >= (
        before + 5
    )
    assert metric(stack, "stopcock_rpc_duration_seconds_count", method="GetPipeline") >= (
        latency_before + 5
    )
    missing = metric(stack, "stopcock_rpc_requests_total", method="GetPipeline", code="NOT_FOUND")
    stack.rest.get("/v0/pipelines/no-such-pipeline")
    assert (
        metric(stack, "stopcock_rpc_requests_total", method="GetPipeline", code="NOT_FOUND")
        == missing + 1
    )


def test_lifecycle_metrics(stack: Stack, name: str) -> None:
    stack.create(name)
    transitions = metric(
        stack, "stopcock_pipeline_transitions_total", **{"from": "Suspended", "to": "Stopping"}
    )
    checkpoints = metric(stack, "stopcock_checkpoint_size_bytes_count")
    suspends = metric(stack, "stopcock_suspend_duration_seconds_count")
    exits = metric(stack, "stopcock_runtime_exits_total", reason="RuntimeExitedUnexpectedly")
    stack.start(name)
    assert metric(stack, "stopcock_pipelines", deployment_status="Running") >= 1
    stack.ingest(name, rows(0, 10))
    assert stack.post(name, "stop").status_code == 202  # a suspend: one final checkpoint
    stack.wait_status(name, "Stopped")
    assert metric(
        stack, "stopcock_pipeline_transitions_total", **{"from": "Suspended", "to": "Stopping"}
    ) == (transitions + 1)
    wait_until(
        lambda: metric(stack, "stopcock_checkpoint_size_bytes_count") >= checkpoints + 1,
        "the checkpoint to be counted",
    )
    assert metric(stack, "stopcock_suspend_duration_seconds_count") == suspends + 1
    stack.start(name)
    os.kill(stack.runtime_info(name)["pid"], signal.SIGKILL)
    stack.wait_status(name, "Stopped")
    assert metric(stack, "stopcock_runtime_exits_total", reason="RuntimeExitedUnexpectedly") == (
        exits + 1
    )


def test_manager_logs_are_json_lines_with_pipeline_and_request_id(stack: Stack, name: str) -> None:
    stack.create(name)
    r = stack.rest.post(f"/v0/pipelines/{name}/start", headers={"x-request-id": "req-abc-123"})
    assert r.status_code == 202
    stack.wait_status(name, "Running")
    stack.force_stop(name)
    lines = (stack.root / "manager.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    assert entries and len(entries) == len([ln for ln in lines if ln.strip()])
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    ours = [e for e in entries if e.get("pipeline") == name]
    assert any("spawned runtime" in e["message"] for e in ours)
