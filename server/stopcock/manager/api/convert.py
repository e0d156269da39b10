"""Records and requests <-> protobuf messages.

`to_proto` is on the hot path of GetPipeline and ListPipelines. Records are
immutable and every write bumps `refresh_version`, so a built message is
cached per (id, refresh_version, selector): a read of an unchanged pipeline
costs a dictionary lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal

from google.protobuf import struct_pb2
from stopcock.manager.domain import errors
from stopcock.manager.domain.definition import Definition, validate_definition
from stopcock.manager.domain.model import PLATFORM_VERSION, PipelineRecord, rfc3339
from stopcock.v1 import pipeline_service_pb2 as pb

SELECTORS = ("all", "status", "status_with_connectors")
WITH_CONNECTORS = "status_with_connectors"
_CACHE_SIZE = 4096
_cache: OrderedDict[tuple[str, int, str, tuple[str, ...], bool, bool], pb.Pipeline] = OrderedDict()


def check_selector(selector: str) -> bool:
    """True for the full view; raises for an unknown selector."""
    if selector in ("", "all"):
        return True
    if selector in ("status", WITH_CONNECTORS):
        return False
    raise errors.bad_request(
        "InvalidSelector",
        f"Unknown selector '{selector}': use 'all', 'status' or '{WITH_CONNECTORS}'",
        {"selector": selector, "allowed": list(SELECTORS)},
    )


def value(v: Any) -> struct_pb2.Value:
    """A JSON value (None prints as null) as a google.protobuf.Value."""
    out = struct_pb2.Value()
    if v is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(v, bool):
        out.bool_value = v
    elif isinstance(v, int | float):
        out.number_value = v
    elif isinstance(v, str):
        out.string_value = v
    elif isinstance(v, dict):
        out.struct_value.update(v)
    elif isinstance(v, list | tuple):
        out.list_value.extend(v)
    else:
        raise TypeError(f"not a JSON value: {type(v).__name__}")
    return out


def _ts(pipeline: pb.Pipeline, field: str, us: int) -> None:
    ts = getattr(pipeline, field)
    ts.seconds, ts.nanos = divmod(us, 1_000_000)
    ts.nanos *= 1000


def _build(rec: PipelineRecord, full: bool, rest: bool) -> pb.Pipeline:
    p = pb.Pipeline(
        id=rec.id,
        name=rec.name,
        description=rec.description,
        version=rec.version,
        platform_version=PLATFORM_VERSION,
        program_version=rec.program_version,
        program_status=rec.program_status,
        deployment_status=rec.deployment_status,
        deployment_desired_status=rec.deployment_desired_status,
        deployment_resources_status=rec.resources_status,
        deployment_resources_desired_status=rec.resources_desired,
        refresh_version=rec.refresh_version,
        storage_status=rec.storage_status,
        tags=rec.tags,
    )
    _ts(p, "created_at", rec.created_at)
    _ts(p, "program_status_since", rec.program_status_since)
    _ts(p, "deployment_status_since", rec.deployment_status_since)
    _ts(p, "deployment_desired_status_since", rec.deployment_desired_status_since)
    _ts(p, "deployment_resources_status_since", rec.resources_status_since)
    _ts(p, "deployment_resources_desired_status_since", rec.resources_desired_since)
    p.program_config.update(rec.program_config)
    p.deployment_error.CopyFrom(value(rec.deployment_error))
    p.deployment_id.CopyFrom(value(rec.deployment_id))
    p.deployment_initial.CopyFrom(value(rec.deployment_initial))
    p.deployment_runtime_status.CopyFrom(value(rec.runtime_status))
    since = rec.runtime_status_since
    p.deployment_runtime_status_since.CopyFrom(value(None if since is None else rfc3339(since)))
    p.deployment_runtime_status_details.CopyFrom(value(rec.runtime_status_details))
    p.deployment_runtime_desired_status.CopyFrom(value(rec.runtime_desired))
    since = rec.runtime_desired_since
    p.deployment_runtime_desired_status_since.CopyFrom(
        value(None if since is None else rfc3339(since))
    )
    if not rest:
        # Stopcock's own (its gRPC clients show it); Feldera's REST pipeline
        # object has no such field, and its clients check the exact key set.
        p.deployment_location.CopyFrom(value(rec.deployment_location))
    p.storage_status_details.CopyFrom(value(rec.storage_status_details))
    # Both selectors carry the bootstrap options, as Feldera's (flattened
    # BootstrapConfig); the resources details only `all`.
    p.bootstrap_policy.CopyFrom(value(rec.bootstrap_policy))
    p.silent_bootstrap = rec.silent_bootstrap
    p.concurrent_bootstrap = rec.concurrent_bootstrap
    if full:
        p.deployment_resources_status_details.CopyFrom(value(rec.resources_status_details))
        p.runtime_config.update(rec.runtime_config)
        p.program_code = rec.program_code
        p.udf_rust = rec.udf_rust
        p.udf_toml = rec.udf_toml
        p.program_error.update(rec.program_error)
        p.program_info.CopyFrom(value(rec.program_info))
    return p


def with_connectors(rec: PipelineRecord, rest: bool = False) -> pb.Pipeline:
    """selector=status_with_connectors: the status fields and the runtime's connector_stats.

    Feldera reads them from the runtime status details (ConnectorStats
    {num_errors}); they are absent when the runtime reports none.
    """
    p = pb.Pipeline()
    p.CopyFrom(to_proto(rec, full=False, rest=rest))
    details = rec.runtime_status_details
    stats = details.get("connector_stats") if isinstance(details, dict) else None
    if isinstance(stats, dict):
        p.connectors.CopyFrom(value(stats))
    return p


def to_proto(rec: PipelineRecord, full: bool = True, rest: bool = False) -> pb.Pipeline:
    """The message of `rec`; `rest` for an answer that Envoy transcodes to JSON."""
    # Client metadata changes without a refresh_version bump (model.annotate).
    key = (rec.id, rec.refresh_version, rec.description, rec.tags, full, rest)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    built = _build(rec, full, rest)
    _cache[key] = built
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return built


def _struct(msg: Any, field: str) -> dict[str, Any] | None:
    if not msg.HasField(field):
        return None
    from google.protobuf.json_format import MessageToDict

    result: dict[str, Any] = MessageToDict(getattr(msg, field))
    return result


def definition_from_proto(d: pb.PipelineDefinition) -> Definition:
    """Validates a request's definition (raises ApiError for bad input)."""
    return validate_definition(
        name=d.name,
        description=d.description,
        runtime_config=_struct(d, "runtime_config"),
        # Presence, not value: Feldera refuses a body without program_code, not "".
        program_code=d.program_code if d.HasField("program_code") else None,
        udf_rust=d.udf_rust,
        udf_toml=d.udf_toml,
        program_config=_struct(d, "program_config"),
        tags=list(d.tags),
    )


_PATCH_STRINGS: tuple[
    Literal["name", "description", "program_code", "udf_rust", "udf_toml"], ...
] = (
    "name",
    "description",
    "program_code",
    "udf_rust",
    "udf_toml",
)


def patch_from_proto(p: pb.PipelinePatch) -> dict[str, Any]:
    """The fields a PATCH carries (presence, not value: "" and [] are values)."""
    from google.protobuf.json_format import MessageToDict

    patch: dict[str, Any] = {f: getattr(p, f) for f in _PATCH_STRINGS if p.HasField(f)}
    if p.HasField("tags"):
        patch["tags"] = MessageToDict(p.tags)
    for field in ("runtime_config", "program_config"):
        value = _struct(p, field)
        if value is not None:
            patch[field] = value
    return patch
