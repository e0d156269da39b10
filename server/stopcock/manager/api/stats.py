"""GET /v0/pipelines/{name}/stats: the runtime's figures in Feldera's shape.

Feldera answers its controller's status (feldera-types adapter_stats.rs,
ExternalControllerStatus): `global_metrics` (ExternalGlobalControllerMetrics),
`suspend_error`, `checkpoint_activity`, `permanent_checkpoint_errors`,
`inputs` and `outputs`. Its Python SDK parses every answer with
PipelineStatistics.from_dict, which needs `state`, `incarnation_uuid`,
`start_time` (Unix seconds) and `transaction_status`, and its waits poll
`pipeline_complete` (wait_for_completion), `total_input_records` and
`total_processed_records` (wait_for_idle), `total_completed_records` and
`buffered_input_records` (the ad-hoc write wait of query/execute).

What Stopcock knows is honest; what it has no notion of gets Feldera's
neutral value (its Default), marked below.
"""

from __future__ import annotations

from typing import Any

from stopcock import runtime_wire
from stopcock.contract.statuses import Runtime
from stopcock.internal.v1 import runtime_service_pb2 as rpb

# Feldera's PipelineState has Paused, Running and Terminated only; its
# default is Paused (an initializing controller reports it).
_STATE = {Runtime.RUNNING.value: "Running", Runtime.SUSPENDED.value: "Terminated"}


def render(reply: rpb.GetStatsResponse) -> dict[str, Any]:
    # An ingress request is one transaction, applied before it is answered,
    # and there are no input connectors: every record received is processed
    # and complete once applied. Records of a request being applied are not
    # counted until then (the runtime learns their number by applying them),
    # so in the meantime the pipeline is not complete, as in Feldera while
    # received records are still being processed.
    records = reply.processed_records
    metrics: dict[str, Any] = {
        "state": _STATE.get(runtime_wire.state_name(reply.state), "Paused"),
        "bootstrap_in_progress": False,  # no bootstrapping of changed views
        "transaction_status": "NoTransaction",  # no transactions API
        "transaction_id": 0,
        "transaction_msecs": None,
        "transaction_records": None,
        "commit_progress": None,
        "transaction_initiators": {
            "transaction_id": None,
            "initiated_by_api": None,
            "initiated_by_connectors": {},
        },
        "concurrent_bootstrap_phase": "Inactive",
        "concurrent_bootstrap_progress": None,
        "rss_bytes": reply.rss_bytes,
        "memory_pressure": "low",  # not measured: Feldera's default
        "memory_pressure_epoch": 0,
        "cpu_msecs": reply.cpu_msecs,
        "uptime_msecs": reply.uptime_msecs,
        "start_time": reply.start_time,
        "incarnation_uuid": reply.incarnation_uuid,
        # The first incarnation's start is not kept across restarts: this one's.
        "initial_start_time": reply.start_time,
        "storage_bytes": reply.storage_bytes,
        "storage_mb_secs": 0,  # not measured
        "runtime_elapsed_msecs": 0,  # not measured
        "buffered_input_records": 0,  # nothing waits in a buffer (see above)
        "buffered_input_bytes": 0,
        "total_input_records": records,
        "total_input_bytes": 0,  # not counted
        "total_processed_records": records,
        "total_processed_bytes": 0,  # not counted
        "total_completed_records": records,
        "output_stall_msecs": 0,  # no output connectors
        "total_initiated_steps": 0,  # no steps: not counted
        "total_completed_steps": 0,
        "pipeline_complete": reply.ingests_in_flight == 0,
    }
    return {
        "global_metrics": metrics,
        "suspend_error": None,
        "checkpoint_activity": None,
        "permanent_checkpoint_errors": None,
        "inputs": [],  # no input connectors
        "outputs": [],  # no output connectors
    }
