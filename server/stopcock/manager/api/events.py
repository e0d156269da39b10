"""Pipeline events (`GET /v0/pipelines/{name}/events[/{event_id}]`), in Feldera's shape.

Feldera's pipeline monitor records an event whenever one of a pipeline's
statuses changes (crates/pipeline-manager/src/api/endpoints/
pipeline_management/pipeline_events.rs, db/operations/pipeline_monitor.rs).
Stopcock already keeps each pipeline's recent versions (for WatchPipeline:
control/records.py in memory on SQLite, the pipeline_history table on
PostgreSQL), so its events are read from those: one event per run of
versions with the same statuses, at the version that started the run.

- `event_id`: a UUID derived from the pipeline's id and that version, so it
  is the same on every call and every replica.
- `recorded_at`: when that version's latest status changed (the newest of
  its `*_since` times), so events are ordered newest first.
- `selector=status` (default) gives the statuses; `selector=all` adds the
  details (`deployment_runtime_status_details`, `deployment_error`,
  `storage_status_details`, `deployment_resources_status_details`).
- `event_id` `latest` is the newest event; a string that is not a UUID is
  400 InvalidUuidParam; an event no longer kept is 404
  UnknownPipelineMonitorEvent, as Feldera answers for one past retention.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from stopcock.manager.domain import errors
from stopcock.manager.domain.model import PipelineRecord, rfc3339

SELECTORS = ("all", "status")
LATEST = "latest"
# Namespace of the event ids (uuid5 over "<pipeline id>/<refresh_version>").
_NAMESPACE = uuid.UUID("6c1f4f8e-2b1d-5b8e-9a57-7d3c0e5f9a21")

Event = dict[str, Any]


def check_selector(selector: str) -> bool:
    """True for `all`; Feldera's default for events is `status`."""
    if selector in ("", "status"):
        return False
    if selector == "all":
        return True
    raise errors.bad_request(
        "InvalidSelector",
        f"Unknown selector '{selector}': use 'all' or 'status'",
        {"selector": selector, "allowed": list(SELECTORS)},
    )


def _statuses(rec: PipelineRecord) -> tuple[Any, ...]:
    return (
        rec.resources_status,
        rec.resources_desired,
        rec.runtime_status,
        rec.runtime_desired,
        rec.deployment_error is not None,
        rec.program_status,
        rec.storage_status,
    )


def _recorded_at(rec: PipelineRecord) -> int:
    return max(
        rec.resources_status_since,
        rec.resources_desired_since,
        rec.runtime_status_since or 0,
        rec.runtime_desired_since or 0,
        rec.program_status_since,
        rec.storage_status_since,
        rec.deployment_status_since,
        rec.deployment_desired_status_since,
    )


def event_id(rec: PipelineRecord) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{rec.id}/{rec.refresh_version}"))


def render(rec: PipelineRecord, full: bool) -> Event:
    """The event of version `rec`, with Feldera's fields (in its order)."""
    event: Event = {
        "event_id": event_id(rec),
        "recorded_at": rfc3339(_recorded_at(rec)),
        "deployment_resources_status": rec.resources_status,
    }
    if full:
        event["deployment_resources_status_details"] = None  # Stopcock has none
    event["deployment_resources_desired_status"] = rec.resources_desired
    event["deployment_runtime_status"] = rec.runtime_status
    if full:
        event["deployment_runtime_status_details"] = (
            None if rec.runtime_status is None else (rec.runtime_status_details or {})
        )
    event["deployment_runtime_desired_status"] = rec.runtime_desired
    event["deployment_has_error"] = rec.deployment_error is not None
    if full:
        event["deployment_error"] = rec.deployment_error
    event["program_status"] = rec.program_status
    event["storage_status"] = rec.storage_status
    if full:
        event["storage_status_details"] = rec.storage_status_details
    return event


def event_versions(versions: Sequence[PipelineRecord]) -> list[PipelineRecord]:
    """The versions that start a run of equal statuses, newest first (`versions`: oldest first)."""
    starts: list[PipelineRecord] = []
    previous: tuple[Any, ...] | None = None
    for rec in versions:
        statuses = _statuses(rec)
        if statuses != previous:
            starts.append(rec)
            previous = statuses
    starts.reverse()
    return starts


def list_events(versions: Sequence[PipelineRecord], full: bool) -> list[Event]:
    return [render(rec, full) for rec in event_versions(versions)]


def find_event(versions: Sequence[PipelineRecord], wanted: str, full: bool) -> Event:
    """The event named `wanted` (a UUID or `latest`)."""
    kept = event_versions(versions)
    if wanted == LATEST:
        if not kept:
            raise errors.ApiError(
                404,
                "NoPipelineMonitorEventsAvailable",
                "There are not yet any pipeline monitor events recorded",
                {},
                "NOT_FOUND",
            )
        return render(kept[0], full)
    try:
        parsed = str(uuid.UUID(wanted))
    except ValueError as exc:
        raise errors.bad_request(
            "InvalidUuidParam",
            f"Invalid UUID string '{wanted}': {exc}",
            {"value": wanted, "error": str(exc)},
        ) from None
    for rec in kept:
        if event_id(rec) == parsed:
            return render(rec, full)
    raise errors.ApiError(
        404,
        "UnknownPipelineMonitorEvent",
        f"Pipeline monitor event with identifier '{parsed}' does not exist -- it might have "
        "been deleted as only a limited number of events are retained",
        {"event_id": parsed},
        "NOT_FOUND",
    )
