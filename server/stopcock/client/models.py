"""Typed results of the client: frozen dataclasses built from the proto messages.

Callers should not have to know protobuf: `google.protobuf.Value` fields
holding `null` become None, Structs become plain dicts (with integral numbers
as ints, since Struct stores every number as a double and a user who wrote
`"workers": 4` expects 4 back), Timestamps and RFC 3339 strings become
timezone-aware datetimes. Field names are those of the REST API, so that
`Pipeline.to_dict()` reads like the REST answer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, timestamp_pb2
from stopcock.contract.json_values import integral_as_int
from stopcock.contract.statuses import Resources, Runtime
from stopcock.v1 import pipeline_service_pb2 as pb

# Statuses (the proto keeps them as strings; stopcock.contract names them all).
STOPPED = Resources.STOPPED.value
RUNNING = Runtime.RUNNING.value
PAUSED = Runtime.PAUSED.value


# A JSON value with integral doubles turned back into ints (see the module doc).
plain = integral_as_int


def _value(msg: Any, field: str) -> Any:
    """A Value (or Struct) field as plain Python; unset or `null` is None."""
    if not msg.HasField(field):
        return None
    return plain(json_format.MessageToDict(getattr(msg, field)))


def _dict(msg: Any, field: str) -> dict[str, Any] | None:
    found = _value(msg, field)
    return found if isinstance(found, dict) else None


def _str(msg: Any, field: str) -> str | None:
    found = _value(msg, field)
    return found if isinstance(found, str) else None


def _time(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def _time_value(msg: Any, field: str) -> datetime | None:
    text = _str(msg, field)
    return None if text is None else datetime.fromisoformat(text)


def _optional(msg: Any, field: str) -> str | None:
    return str(getattr(msg, field)) if msg.HasField(field) else None


def rfc3339(moment: datetime) -> str:
    """UTC with microseconds and `Z`, as the REST API prints times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class Pipeline:
    """A pipeline as the manager reported it (every field of the proto's `Pipeline`).

    Fields that `selector="status"` leaves out (runtime_config, program_code,
    udf_rust, udf_toml, program_error, program_info) are None in that view.
    """

    id: str
    name: str
    description: str
    created_at: datetime
    version: int
    platform_version: str
    runtime_config: dict[str, Any] | None
    program_code: str | None
    udf_rust: str | None
    udf_toml: str | None
    program_config: dict[str, Any] | None
    program_version: int
    program_status: str
    program_status_since: datetime
    program_error: dict[str, Any] | None
    program_info: Any
    deployment_error: dict[str, Any] | None
    deployment_id: str | None
    deployment_initial: str | None
    deployment_status: str
    deployment_status_since: datetime
    deployment_desired_status: str
    deployment_desired_status_since: datetime
    deployment_resources_status: str
    deployment_resources_status_since: datetime
    deployment_resources_desired_status: str
    deployment_resources_desired_status_since: datetime
    deployment_runtime_status: str | None
    deployment_runtime_status_since: datetime | None
    deployment_runtime_status_details: Any
    deployment_runtime_desired_status: str | None
    deployment_runtime_desired_status_since: datetime | None
    deployment_location: str | None
    refresh_version: int
    storage_status: str
    storage_status_details: dict[str, Any] | None
    tags: tuple[str, ...]

    @property
    def error_code(self) -> str | None:
        """The `error_code` of `deployment_error`, or None."""
        if self.deployment_error is None:
            return None
        code = self.deployment_error.get("error_code")
        return code if isinstance(code, str) else None

    @property
    def failed(self) -> bool:
        """Stopped with a deployment error and not asked to start again: it will not move."""
        return (
            self.deployment_status == STOPPED
            and self.deployment_desired_status == STOPPED
            and self.deployment_error is not None
        )

    def to_dict(self) -> dict[str, Any]:
        """The pipeline as JSON-ready data, shaped like the REST answer."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_proto(cls, p: pb.Pipeline) -> Pipeline:
        return cls(
            id=p.id,
            name=p.name,
            description=p.description,
            created_at=_time(p.created_at),
            version=p.version,
            platform_version=p.platform_version,
            runtime_config=_dict(p, "runtime_config"),
            program_code=_optional(p, "program_code"),
            udf_rust=_optional(p, "udf_rust"),
            udf_toml=_optional(p, "udf_toml"),
            program_config=_dict(p, "program_config"),
            program_version=p.program_version,
            program_status=p.program_status,
            program_status_since=_time(p.program_status_since),
            program_error=_dict(p, "program_error"),
            program_info=_value(p, "program_info"),
            deployment_error=_dict(p, "deployment_error"),
            deployment_id=_str(p, "deployment_id"),
            deployment_initial=_str(p, "deployment_initial"),
            deployment_status=p.deployment_status,
            deployment_status_since=_time(p.deployment_status_since),
            deployment_desired_status=p.deployment_desired_status,
            deployment_desired_status_since=_time(p.deployment_desired_status_since),
            deployment_resources_status=p.deployment_resources_status,
            deployment_resources_status_since=_time(p.deployment_resources_status_since),
            deployment_resources_desired_status=p.deployment_resources_desired_status,
            deployment_resources_desired_status_since=_time(
                p.deployment_resources_desired_status_since
            ),
            deployment_runtime_status=_str(p, "deployment_runtime_status"),
            deployment_runtime_status_since=_time_value(p, "deployment_runtime_status_since"),
            deployment_runtime_status_details=_value(p, "deployment_runtime_status_details"),
            deployment_runtime_desired_status=_str(p, "deployment_runtime_desired_status"),
            deployment_runtime_desired_status_since=_time_value(
                p, "deployment_runtime_desired_status_since"
            ),
            deployment_location=_str(p, "deployment_location"),
            refresh_version=p.refresh_version,
            storage_status=p.storage_status,
            storage_status_details=_dict(p, "storage_status_details"),
            tags=tuple(p.tags),
        )


@dataclass(frozen=True)
class PipelineChange:
    """One message of WatchPipeline: the pipeline as persisted at one change.

    `resumed` is True when the change directly follows the previous one (or
    the `after_refresh_version` asked for): False means "current state, from
    which earlier changes can no longer be replayed".
    """

    pipeline: Pipeline
    resumed: bool

    @classmethod
    def from_proto(cls, msg: pb.WatchPipelineResponse) -> PipelineChange:
        return cls(Pipeline.from_proto(msg.pipeline), msg.resumed)


@dataclass(frozen=True)
class PutResult:
    """PutPipeline's answer: the pipeline as stored, and whether it was created."""

    pipeline: Pipeline
    created: bool


@dataclass(frozen=True)
class Checkpoint:
    """A requested checkpoint: its sequence number in one runtime incarnation."""

    sequence_number: int
    incarnation_uuid: str


@dataclass(frozen=True)
class CheckpointStatus:
    """The latest successful checkpoint (a sequence number) and latest failure.

    `failure` is `{sequence_number, error, failed_at}` or None.
    """

    success: int | None
    failure: dict[str, Any] | None

    @classmethod
    def from_proto(cls, msg: pb.GetCheckpointStatusResponse) -> CheckpointStatus:
        success = _value(msg, "success")
        return cls(
            success=success if isinstance(success, int) else None,
            failure=_dict(msg, "failure"),
        )


@dataclass(frozen=True)
class ApiKey:
    """An API key as listed: never the key itself, which is shown only at creation."""

    id: str
    name: str
    role: str
    created_at: datetime

    @classmethod
    def from_proto(cls, msg: pb.ApiKey) -> ApiKey:
        return cls(msg.id, msg.name, msg.role, _time(msg.created_at))


@dataclass(frozen=True)
class CreatedApiKey:
    """A new API key, with the key (`apikey:...`): this is the only time it is shown."""

    id: str
    name: str
    role: str
    api_key: str = dataclasses.field(repr=False)
    created_at: datetime

    @classmethod
    def from_proto(cls, msg: pb.CreateApiKeyResponse) -> CreatedApiKey:
        return cls(msg.id, msg.name, msg.role, msg.api_key, _time(msg.created_at))
