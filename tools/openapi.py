"""Writes the OpenAPI 3.1 document of Stopcock's REST face, from the proto.

    python tools/openapi.py generated/stopcock_descriptor.pb generated/openapi.json

`tools/generate.sh` runs it (so `make generate` refreshes the document and
`make check-generated` fails when it is stale); the manager serves the result
as `GET /v0/openapi.json`.

Everything comes from the descriptor set (built with --include_imports and
--include_source_info): one operation per `google.api.http` rule of
`stopcock.v1.PipelineService`, its parameters and bodies from the request and
response messages, its summary and description from the RPC's comment, and
the schemas from the messages with the JSON mapping Envoy's transcoder prints
(envoy/envoy.yaml: `preserve_proto_field_names`, `always_print_primitive_fields`).

What the proto cannot say lives in the tables below (REST statuses, open
methods, roles, raw body content types, per-method errors, the values a
field or query parameter may take, mostly read from the manager's own
rules); the tests check them against the manager (tests/test_openapi.py,
and tests/test_fuzz.py, which fuzzes the REST face from this document). One more input: the query
parameters the Lua filter lets through (envoy/stopcock.lua), since a request
field the filter refuses is no parameter of the REST face.

The output is deterministic: same inputs, same bytes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.api import annotations_pb2  # registers the google.api.http option
from google.protobuf import descriptor_pb2
from stopcock import limits
from stopcock.internal.v1 import runtime_service_pb2 as rpb
from stopcock.manager.api import convert, events, ingress, stats
from stopcock.manager.auth import api_keys
from stopcock.manager.auth import authenticator as auth
from stopcock.manager.domain import bootstrap_options, definition, state_machine

FieldProto = descriptor_pb2.FieldDescriptorProto
JSON = dict[str, Any]

REPO = Path(__file__).resolve().parents[1]
LUA_FILTER = REPO / "envoy" / "stopcock.lua"
PYPROJECT = REPO / "pyproject.toml"
SERVICE = "stopcock.v1.PipelineService"
HTTP_BODY = ".google.api.HttpBody"

# REST success statuses other than 200 (the manager sends them as
# `x-http-status`; see server/stopcock/manager/api/servicer.py).
SUCCESS_STATUS: dict[str, dict[str, str]] = {
    "CreatePipeline": {"201": "Created"},
    "PutPipeline": {"201": "Created", "200": "Replaced"},
    "CreateApiKey": {"201": "Created"},
    "StartPipeline": {"202": "Accepted: the start proceeds asynchronously"},
    "PausePipeline": {"202": "Accepted: the pause proceeds asynchronously"},
    "ResumePipeline": {"202": "Accepted: the resume proceeds asynchronously"},
    "StopPipeline": {"202": "Accepted: the stop proceeds asynchronously"},
    "ClearStorage": {"202": "Accepted: clearing proceeds asynchronously"},
    # Feldera's get_cluster_health: the same body with 200 and with 503.
    "GetClusterHealth": {
        "200": "All services healthy",
        "503": "One or more services unhealthy (an unreachable manager answers the error body)",
    },
}


def required_role(method: str) -> str | None:
    """None for an open method, else "read" or "write": the manager's own rule."""
    return auth.required_role(f"{auth.SERVICE}{method}")


# Errors beyond those every operation can answer (400, 500, 503; 401/403 when
# a credential is needed; 404 when the path names something).
# (413 is added to every operation that takes a request body.)
EXTRA_ERRORS: dict[str, tuple[str, ...]] = {
    "CreatePipeline": ("409",),
    "PutPipeline": ("409",),
    "PatchPipeline": ("409",),
    "CreateApiKey": ("409",),
    "StartPipeline": ("405",),
    "StopPipeline": ("405",),
    "CheckpointPipeline": ("405",),
}

# What the proto's types cannot say about some values, from the manager's own
# rules. Names (of pipelines and API keys): path parameters called `name` and
# these fields.
NAME_SCHEMA: JSON = {
    "type": "string",
    "minLength": 1,
    "maxLength": definition.NAME_MAX_BYTES,  # bytes; the pattern allows ASCII only
    "pattern": definition.NAME_PATTERN,
}
NAME_FIELDS = frozenset(
    {
        ".stopcock.v1.PipelineDefinition.name",
        ".stopcock.v1.Pipeline.name",
        ".stopcock.v1.CreateApiKeyRequest.name",
        ".stopcock.v1.CreateApiKeyResponse.name",
        ".stopcock.v1.ApiKey.name",
    }
)
FIELD_CONSTRAINTS: dict[str, JSON] = {
    ".stopcock.v1.PipelineDefinition.description": {"maxLength": definition.DESCRIPTION_MAX_CHARS},
    ".stopcock.v1.Pipeline.description": {"maxLength": definition.DESCRIPTION_MAX_CHARS},
    ".stopcock.v1.CreateApiKeyRequest.role": {"enum": list(api_keys.ROLES)},
    ".stopcock.v1.CreateApiKeyResponse.role": {"enum": list(api_keys.ROLES)},
    ".stopcock.v1.ApiKey.role": {"enum": list(api_keys.ROLES)},
    ".stopcock.v1.PipelineDefinition.tags": {
        "maxItems": definition.TAGS_MAX,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": definition.TAG_MAX_CHARS,
            "pattern": definition.TAG_PATTERN,
        },
    },
}
# Fields a request body must carry (the manager refuses it with InvalidRequest
# otherwise), as Feldera's PostPutPipeline requires them.
REQUEST_REQUIRED: dict[str, list[str]] = {
    ".stopcock.v1.PipelineDefinition": ["name", "program_code"],
}
# Query parameters with a fixed set of values. An empty value is refused too
# (envoy/stopcock.lua, VALUED_QUERY_PARAMETERS; checked by main below): leave
# the parameter out for the default.
QUERY_ENUMS: dict[str, list[str]] = {
    "selector": list(convert.SELECTORS),
    "initial": list(state_machine.INITIAL_VALUES),
    "bootstrap_policy": list(bootstrap_options.POLICIES),
    "update_format": list(ingress.UPDATE_FORMATS),
    # stopcock/manager/api/ingress.py check_format: JSON (ingress: CSV too, below).
    "format": ["json"],
    "json_flavor": ["default"],
}
# Where one request's parameter takes other values than QUERY_ENUMS says.
QUERY_ENUMS_OF: dict[str, list[str]] = {
    ".stopcock.v1.IngestRowsRequest.format": ["json", "csv"],
    ".stopcock.v1.QueryPipelineRequest.format": list(ingress.QUERY_CONTENT_TYPES),
    ".stopcock.v1.ListPipelineEventsRequest.selector": list(events.SELECTORS),
    ".stopcock.v1.GetPipelineEventRequest.selector": list(events.SELECTORS),
}

# The global_metrics that Feldera's Python SDK reads (feldera/stats.py and the
# waits of feldera/pipeline.py): required in the schema.
STATS_SDK_FIELDS = (
    "state",
    "incarnation_uuid",
    "start_time",
    "transaction_status",
    "total_input_records",
    "total_processed_records",
    "total_completed_records",
    "buffered_input_records",
    "pipeline_complete",
)


def _schema_of(value: Any) -> JSON:
    """A JSON schema for a value the stats renderer puts in every answer."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer", "minimum": 0}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        return {"type": "array"}
    return {"type": "object"}


def stats_schema() -> JSON:
    """GET /stats, from what stopcock.manager.api.stats renders (so the two agree)."""
    sample = stats.render(rpb.GetStatsResponse())
    metrics: JSON = {name: _schema_of(v) for name, v in sample["global_metrics"].items()}
    metrics["state"] = {"enum": ["Paused", "Running", "Terminated"]}
    metrics["incarnation_uuid"] = {"type": "string", "format": "uuid"}
    metrics["start_time"] = {"type": "integer", "description": "Unix time, seconds."}
    properties: JSON = {name: _schema_of(v) for name, v in sample.items()}
    properties["global_metrics"] = {
        "type": "object",
        "required": list(STATS_SDK_FIELDS),
        "properties": metrics,
    }
    return {
        "type": "object",
        "description": "Feldera's ControllerStatus; figures Stopcock does not measure are 0.",
        "required": list(sample),
        "properties": properties,
    }


def event_schema() -> JSON:
    """A pipeline event (stopcock.manager.api.events.render): Feldera's
    PipelineMonitorEventSelectedInfo; the details come with selector=all."""
    status = {"type": "string"}
    nullable = {"type": ["string", "null"]}
    details = {"description": "Any JSON value, or null."}
    required = [
        "event_id",
        "recorded_at",
        "deployment_resources_status",
        "deployment_resources_desired_status",
        "deployment_runtime_status",
        "deployment_runtime_desired_status",
        "deployment_has_error",
        "program_status",
        "storage_status",
    ]
    return {
        "type": "object",
        "required": required,
        "properties": {
            "event_id": {"type": "string", "format": "uuid"},
            "recorded_at": {"type": "string", "format": "date-time"},
            "deployment_resources_status": status,
            "deployment_resources_status_details": details,
            "deployment_resources_desired_status": status,
            "deployment_runtime_status": nullable,
            "deployment_runtime_status_details": details,
            "deployment_runtime_desired_status": nullable,
            "deployment_has_error": {"type": "boolean"},
            "deployment_error": {
                "description": "The error ({message, error_code, details}), or null.",
                "type": ["object", "null"],
            },
            "program_status": status,
            "storage_status": status,
            "storage_status_details": details,
        },
    }


# google.api.HttpBody fields: raw bodies, by content type. Keyed by
# `.package.Message.field`; an HttpBody field missing here fails generation.
RAW_BODIES: dict[str, JSON] = {
    # Any content type is taken as is; `array` says how the JSON is laid out.
    ".stopcock.v1.IngestRowsRequest.body": {
        "application/json": {
            "schema": {"description": "With `array=true`: one JSON array of updates."},
        },
        "application/x-ndjson": {
            "schema": {"type": "string", "description": "Otherwise: one JSON update per line."},
        },
        "text/csv": {
            "schema": {
                "type": "string",
                "description": "With `format=csv`: one record per line, fields in the "
                "table's column order, each record an insertion.",
            },
        },
    },
    ".stopcock.v1.QueryPipelineResponse.body": {
        "application/x-ndjson": {
            "schema": {"type": "string", "description": "One JSON object per row, per line."},
        },
        "text/plain": {
            "schema": {
                "type": "string",
                "description": "With `format=text`: the rows as Feldera's ASCII table.",
            },
        },
    },
    ".stopcock.v1.GetPipelineLogsResponse.body": {
        "text/plain": {"schema": {"type": "string"}},
    },
    # Feldera's ControllerStatus; see stats_schema.
    ".stopcock.v1.GetPipelineStatsResponse.body": {
        "application/json": {"schema": stats_schema()},
    },
    ".stopcock.v1.ListPipelineEventsResponse.body": {
        "application/json": {"schema": {"type": "array", "items": event_schema()}},
    },
    ".stopcock.v1.GetPipelineEventResponse.body": {
        "application/json": {"schema": event_schema()},
    },
    # Feldera's ValidateProgramResponse: one of its three variants.
    ".stopcock.v1.ValidateProgramResponse.body": {
        "application/json": {
            "schema": {
                "type": "object",
                "description": "Feldera's ValidateProgramResponse: one of "
                '`{"Success": {"program_info": ...}}`, `{"SqlError": {"info": '
                '{"exit_code", "messages"}}}`, `{"SystemError": {"error": ...}}`.',
            }
        },
    },
    ".stopcock.v1.GetOpenApiResponse.body": {
        "application/json": {"schema": {"type": "object", "description": "This document."}},
    },
}

# google.api.HttpBody fields whose bytes the manager prints as the proto3 JSON
# of a message's field, exactly as Envoy's transcoder would print that field
# (server/stopcock/manager/api/rendering.py): documented with that field's
# schema. Keyed like RAW_BODIES; the value names the message and its field.
JSON_BODIES: dict[str, tuple[str, str]] = {
    # GET /v0/pipelines: ListPipelines' `pipelines`, a JSON array of Pipeline.
    ".stopcock.v1.ListPipelinesJsonResponse.body": (
        ".stopcock.v1.ListPipelinesResponse",
        "pipelines",
    ),
}

# Methods with no REST binding, and the method that serves their REST face.
# Any other method without a google.api.http rule fails generation.
GRPC_ONLY: dict[str, str] = {"ListPipelines": "ListPipelinesJson"}

# Server streams of messages (not HttpBody): Envoy prints one JSON object per
# line (`stream_newline_delimited`) with this content type.
STREAM_CONTENT_TYPE = "application/json"

ERRORS: dict[str, tuple[str, str]] = {
    "400": ("BadRequest", "Invalid request: a bad parameter, body or state transition"),
    "401": ("Unauthorized", "Missing or invalid credential (AuthenticationFailed)"),
    "403": ("Forbidden", "The credential's role may not call this (InsufficientPermissions)"),
    "404": ("NotFound", "No such pipeline, table or API key"),
    "405": ("MethodNotAllowed", "The action is not supported (UnsupportedPipelineAction)"),
    "409": ("Conflict", "The name is taken (DuplicateName)"),
    "413": (
        "PayloadTooLarge",
        f"The request body is larger than {limits.MAX_REQUEST_BODY_BYTES} bytes, or than"
        f" {limits.MAX_MESSAGE_BYTES} bytes once decoded"
        " (PayloadTooLarge, details {limit_bytes})",
    ),
    "500": (
        "InternalError",
        "Internal error (never a stack trace); ResponseTooLarge when the answer is larger than"
        f" {limits.MAX_RESPONSE_BODY_BYTES} bytes (details {{limit_bytes}})",
    ),
    "503": ("Unavailable", "The manager or the pipeline cannot serve this now: retry"),
}

# Well-known types, as the proto3 JSON mapping prints them.
WELL_KNOWN: dict[str, JSON] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Struct": {"type": "object"},
    # Any JSON value, null included: the empty schema.
    ".google.protobuf.Value": {},
    ".google.protobuf.ListValue": {"type": "array"},
}

SCALARS: dict[int, JSON] = {
    FieldProto.TYPE_STRING: {"type": "string"},
    FieldProto.TYPE_BOOL: {"type": "boolean"},
    FieldProto.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
    FieldProto.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_UINT32: {"type": "integer", "minimum": 0, "maximum": 4294967295},
    FieldProto.TYPE_FIXED32: {"type": "integer", "minimum": 0, "maximum": 4294967295},
    # 64-bit integers are JSON strings in the proto3 JSON mapping.
    FieldProto.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldProto.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldProto.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldProto.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldProto.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldProto.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldProto.TYPE_DOUBLE: {"type": "number", "format": "double"},
}

HTTP_METHODS = ("get", "put", "post", "delete", "patch")
_PATH_PARAM = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")


class OpenApiError(Exception):
    """The proto uses something this generator does not map (yet)."""


@dataclass(frozen=True)
class Message:
    proto: descriptor_pb2.DescriptorProto
    file: descriptor_pb2.FileDescriptorProto
    path: tuple[int, ...]  # source location path
    full_name: str  # ".package.Message"

    @property
    def name(self) -> str:
        return self.proto.name


class Descriptors:
    """The messages and comments of a descriptor set."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.files = list(files.file)
        self.messages: dict[str, Message] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self._comments: dict[tuple[str, tuple[int, ...]], str] = {}
        for file in self.files:
            for location in file.source_code_info.location:
                if location.leading_comments:
                    self._comments[file.name, tuple(location.path)] = location.leading_comments
            for i, message in enumerate(file.message_type):
                self._add(file, f".{file.package}" if file.package else "", message, (4, i))
            for enum in file.enum_type:
                self.enums[f".{file.package}.{enum.name}"] = enum

    def _add(
        self,
        file: descriptor_pb2.FileDescriptorProto,
        scope: str,
        message: descriptor_pb2.DescriptorProto,
        path: tuple[int, ...],
    ) -> None:
        full = f"{scope}.{message.name}"
        self.messages[full] = Message(message, file, path, full)
        for j, nested in enumerate(message.nested_type):
            self._add(file, full, nested, (*path, 3, j))
        for enum in message.enum_type:
            self.enums[f"{full}.{enum.name}"] = enum

    def comment(self, file: descriptor_pb2.FileDescriptorProto, path: tuple[int, ...]) -> str:
        """The leading comment at a source path, cleaned; "" if none."""
        raw = self._comments.get((file.name, path), "")
        lines = [line[1:] if line.startswith(" ") else line for line in raw.splitlines()]
        lines = [line.rstrip() for line in lines if not line.strip().startswith("buf:lint:")]
        return "\n".join(lines).strip()

    def field_comment(self, message: Message, index: int) -> str:
        return self.comment(message.file, (*message.path, 2, index))

    def has_source_info(self) -> bool:
        return bool(self._comments)


def summary_of(comment: str) -> str:
    """The first sentence of a comment's first paragraph."""
    paragraph = " ".join(comment.split("\n\n", maxsplit=1)[0].split())
    match = re.search(r"\.(\s|$)", paragraph)
    return paragraph[: match.start() + 1] if match else paragraph


def is_map(descriptors: Descriptors, field: FieldProto) -> bool:
    entry = descriptors.messages.get(field.type_name)
    return (
        field.label == FieldProto.LABEL_REPEATED
        and entry is not None
        and entry.proto.options.map_entry
    )


class Builder:
    """Turns the service's HTTP rules and messages into an OpenAPI document."""

    def __init__(self, descriptors: Descriptors, query_allowlist: frozenset[str]) -> None:
        self.d = descriptors
        self.query_allowlist = query_allowlist
        self.schemas: dict[str, JSON] = {}
        self.response_messages: set[str] = set()
        self.request_messages: set[str] = set()
        self.refused_query_fields: list[str] = []

    # -- schemas -------------------------------------------------------

    def ref(self, type_name: str, *, response: bool) -> JSON:
        """A schema for a message type: inline for well-known types, else a $ref."""
        if type_name in WELL_KNOWN:
            return dict(WELL_KNOWN[type_name])
        if type_name.startswith(".google.protobuf."):
            raise OpenApiError(f"no JSON mapping here for {type_name}")
        if type_name == HTTP_BODY:
            raise OpenApiError("google.api.HttpBody is a raw body, not a JSON field")
        message = self.d.messages[type_name]
        (self.response_messages if response else self.request_messages).add(type_name)
        name = message.name
        if name not in self.schemas:
            # A placeholder first (messages may recurse), naming the message
            # so that another one of the same name is caught.
            self.schemas[name] = {"x-proto-message": type_name[1:]}
            schema = self.message_schema(message, response=response)
            self.schemas[name] = {**schema, "x-proto-message": type_name[1:]}
        elif self.schemas[name]["x-proto-message"] != type_name[1:]:
            raise OpenApiError(f"two messages named {name}")
        return {"$ref": f"#/components/schemas/{name}"}

    def field_schema(self, field: FieldProto, *, response: bool) -> JSON:
        if is_map(self.d, field):
            entry = self.d.messages[field.type_name].proto
            value = next(f for f in entry.field if f.name == "value")
            return {"type": "object", "additionalProperties": self.value_schema(value, response)}
        schema = self.value_schema(field, response)
        if field.label == FieldProto.LABEL_REPEATED:
            return {"type": "array", "items": schema}
        return schema

    def value_schema(self, field: FieldProto, response: bool) -> JSON:
        if field.type in (FieldProto.TYPE_MESSAGE, FieldProto.TYPE_GROUP):
            return self.ref(field.type_name, response=response)
        if field.type == FieldProto.TYPE_ENUM:
            enum = self.d.enums[field.type_name]
            return {"type": "string", "enum": [v.name for v in enum.value]}
        return dict(SCALARS[field.type])

    def message_schema(self, message: Message, *, response: bool) -> JSON:
        properties: JSON = {}
        required: list[str] = []
        full = message.full_name
        for index, field in enumerate(message.proto.field):
            prop = self.field_schema(field, response=response)
            if f"{full}.{field.name}" in NAME_FIELDS:
                prop = dict(NAME_SCHEMA)
            prop = {**prop, **FIELD_CONSTRAINTS.get(f"{full}.{field.name}", {})}
            comment = self.d.field_comment(message, index)
            if comment:
                prop = {**prop, "description": comment}
            properties[field.name] = prop
            # Envoy prints every field without presence, zero values and
            # empty lists included; unset messages and proto3 `optional`
            # fields are omitted.
            printed_always = field.label == FieldProto.LABEL_REPEATED or (
                field.type not in (FieldProto.TYPE_MESSAGE, FieldProto.TYPE_GROUP)
                and not field.proto3_optional
                and not field.HasField("oneof_index")
            )
            if printed_always:
                required.append(field.name)
        schema: JSON = {"type": "object"}
        description = self.d.comment(message.file, message.path)
        if description:
            schema["description"] = description
        schema["properties"] = properties
        # Whether a field is always there holds for answers only: a request
        # body may leave any field out.
        if response and required:
            schema["required"] = required
        elif not response and full in REQUEST_REQUIRED:
            schema["required"] = REQUEST_REQUIRED[full]
        return schema

    # -- operations ----------------------------------------------------

    def operation(
        self,
        method: descriptor_pb2.MethodDescriptorProto,
        *,
        comment: str,
        path: str,
        rule: Any,
        operation_id: str,
    ) -> JSON:
        request = self.d.messages[method.input_type]
        response = self.d.messages[method.output_type]
        fields = {f.name: (i, f) for i, f in enumerate(request.proto.field)}
        path_fields = _PATH_PARAM.findall(path)
        for name in path_fields:
            if name not in fields:
                raise OpenApiError(f"{method.name}: path field {name!r} is not in the request")
        body = rule.body

        op: JSON = {"operationId": operation_id, "tags": [tag_of(path)]}
        if comment:
            op["summary"] = summary_of(comment)
            op["description"] = comment
        parameters: list[JSON] = []
        for name in path_fields:
            index, field = fields[name]
            parameters.append(self.parameter(request, index, field, "path"))
        if body != "*":
            for index, field in enumerate(request.proto.field):
                if field.name in path_fields or field.name == body:
                    continue
                if field.name not in self.query_allowlist:
                    self.refused_query_fields.append(f"{method.name}.{field.name}")
                    continue
                parameters.append(self.parameter(request, index, field, "query"))
        if parameters:
            op["parameters"] = parameters
        if body:
            op["requestBody"] = self.request_body(request, body, path_fields)

        op["responses"] = self.responses(
            method, response, rule.response_body, path, has_body=bool(body)
        )
        role = required_role(method.name)
        op["security"] = [] if role is None else [{"bearer": [role]}]
        return op

    def json_body(self, full: str, response_body: str) -> JSON:
        """The schema of an HttpBody answer that holds the JSON of a message's field."""
        message_name, field_name = JSON_BODIES[f"{full}.{response_body}"]
        message = self.d.messages[message_name]
        field = next(f for f in message.proto.field if f.name == field_name)
        self.response_messages.add(message_name)
        return self.field_schema(field, response=True)

    def parameter(self, message: Message, index: int, field: FieldProto, where: str) -> JSON:
        if field.type in (FieldProto.TYPE_MESSAGE, FieldProto.TYPE_GROUP):
            raise OpenApiError(f"{message.name}.{field.name}: message-typed {where} parameter")
        parameter: JSON = {"name": field.name, "in": where}
        comment = self.d.field_comment(message, index)
        if comment:
            parameter["description"] = comment
        if where == "path":
            parameter["required"] = True
        schema = self.field_schema(field, response=False)
        if where == "path":
            # An empty segment is no path parameter: another route, or none.
            schema = {**schema, "minLength": 1}
            if field.name == "name":
                schema = dict(NAME_SCHEMA)
        elif field.name in QUERY_ENUMS:
            full = f".{message.file.package}.{message.name}.{field.name}"
            schema = {**schema, "enum": QUERY_ENUMS_OF.get(full, QUERY_ENUMS[field.name])}
        parameter["schema"] = schema
        return parameter

    def request_body(self, request: Message, body: str, path_fields: list[str]) -> JSON:
        if body == "*":
            if not path_fields:
                schema = self.ref(f".{request.file.package}.{request.name}", response=False)
            else:  # the request minus the fields the path binds
                schema = self.message_schema(request, response=False)
                for name in path_fields:
                    del schema["properties"][name]
            return {"required": True, "content": {"application/json": {"schema": schema}}}
        index, field = next((i, f) for i, f in enumerate(request.proto.field) if f.name == body)
        if field.type_name == HTTP_BODY:
            return {
                "required": True,
                "description": self.d.field_comment(request, index),
                "content": raw_body(f".{request.file.package}.{request.name}.{body}"),
            }
        content = {"schema": self.field_schema(field, response=False)}
        return {"required": True, "content": {"application/json": content}}

    def responses(
        self,
        method: descriptor_pb2.MethodDescriptorProto,
        response: Message,
        response_body: str,
        path: str,
        *,
        has_body: bool,
    ) -> JSON:
        full = f".{response.file.package}.{response.name}"
        if response_body:
            field = next(f for f in response.proto.field if f.name == response_body)
            if field.type_name == HTTP_BODY and f"{full}.{response_body}" in JSON_BODIES:
                content = {"application/json": {"schema": self.json_body(full, response_body)}}
            elif field.type_name == HTTP_BODY:
                content = raw_body(f"{full}.{response_body}")
            else:
                self.response_messages.add(full)
                schema = self.field_schema(field, response=True)
                content = {"application/json": {"schema": schema}}
        else:
            content = {
                STREAM_CONTENT_TYPE if method.server_streaming else "application/json": {
                    "schema": self.ref(full, response=True)
                }
            }
        if method.server_streaming and not response_body:
            note = f"A stream: one {response.name} JSON object per line (newline-delimited)."
        elif method.server_streaming:
            note = "A stream, sent in chunks as it is produced."
        else:
            note = ""
        responses: JSON = {}
        for status, text in SUCCESS_STATUS.get(method.name, {"200": "OK"}).items():
            description = f"{text}. {note}".strip() if note else text
            responses[status] = {"description": description, "content": content}
        errors = ["400"]
        if required_role(method.name) is not None:
            errors += ["401", "403"]
        if "{" in path:
            errors.append("404")
        errors += [*EXTRA_ERRORS.get(method.name, ()), "500", "503"]
        if has_body:
            errors.append("413")
        for status in sorted(errors):
            # A success status documented above (GetClusterHealth's 503) keeps its body.
            responses.setdefault(status, {"$ref": f"#/components/responses/{ERRORS[status][0]}"})
        return responses


def tag_of(path: str) -> str:
    if path.startswith("/v0/pipelines"):
        return "Pipelines"
    if path.startswith("/v0/api_keys"):
        return "API keys"
    return "System"


def raw_body(key: str) -> JSON:
    if key not in RAW_BODIES:
        raise OpenApiError(f"no content type known for the google.api.HttpBody field {key}")
    copy: JSON = json.loads(json.dumps(RAW_BODIES[key]))
    return copy


def http_rules(rule: Any) -> Iterator[tuple[str, str, Any]]:
    """(verb, path, rule) for a rule and its additional bindings."""
    for each in (rule, *rule.additional_bindings):
        kind = each.WhichOneof("pattern")
        if kind not in HTTP_METHODS:
            raise OpenApiError(f"unsupported HTTP rule pattern {kind!r}")
        yield kind, getattr(each, kind), each


def lua_list(name: str, lua: Path = LUA_FILTER) -> frozenset[str]:
    """The strings of the list `local <name> = {...}` in envoy/stopcock.lua."""
    match = re.search(rf"local {name} = \{{(.*?)\}}", lua.read_text(), re.S)
    if match is None:
        raise OpenApiError(f"{lua}: no {name} table")
    return frozenset(re.findall(r'"([^"]+)"', match.group(1)))


def lua_query_allowlist(lua: Path = LUA_FILTER) -> frozenset[str]:
    """The query parameters envoy/stopcock.lua lets through (ALLOWED_QUERY_PARAMETERS)."""
    return lua_list("ALLOWED_QUERY_PARAMETERS", lua)


def check_query_enums(lua: Path = LUA_FILTER) -> None:
    """The Lua filter refuses an empty value for exactly the enum-valued parameters."""
    valued = lua_list("VALUED_QUERY_PARAMETERS", lua)
    if valued != set(QUERY_ENUMS):
        raise OpenApiError(
            f"{lua}: VALUED_QUERY_PARAMETERS {sorted(valued)} differ from QUERY_ENUMS"
            f" {sorted(QUERY_ENUMS)}"
        )


def error_components() -> JSON:
    responses: JSON = {}
    for status, (name, description) in ERRORS.items():
        response: JSON = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        if status == "401":
            response["headers"] = {
                "WWW-Authenticate": {
                    "description": 'The Bearer scheme, e.g. `Bearer realm="stopcock"`.',
                    "schema": {"type": "string", "pattern": "^Bearer( |$)"},
                }
            }
        if status == "503":
            response["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer", "const": 5},
                }
            }
        responses[name] = response
    return responses


ERROR_SCHEMA: JSON = {
    "type": "object",
    "description": "The body of every error answer (HTTP status 4xx and 5xx).",
    "properties": {
        "message": {"type": "string", "minLength": 1, "description": "Human-readable explanation."},
        "error_code": {
            "type": "string",
            "pattern": "^[A-Z][A-Za-z0-9]*$",
            "description": "Stable CamelCase code, e.g. UnknownPipelineName.",
        },
        "details": {
            "type": ["object", "null"],
            "description": "Structured details, depending on error_code.",
        },
    },
    "required": ["message", "error_code", "details"],
    "additionalProperties": False,
}


def build(
    files: descriptor_pb2.FileDescriptorSet, query_allowlist: frozenset[str]
) -> tuple[JSON, list[str]]:
    """The OpenAPI document for PipelineService's HTTP rules, and the request
    fields left out as query parameters because the Lua filter refuses them."""
    d = Descriptors(files)
    if not d.has_source_info():
        raise OpenApiError("the descriptor set has no source info (protoc --include_source_info)")
    package, _, service_name = SERVICE.rpartition(".")
    found = [
        (file, i, s)
        for file in d.files
        if file.package == package
        for i, s in enumerate(file.service)
        if s.name == service_name
    ]
    if len(found) != 1:
        raise OpenApiError(f"{SERVICE} not found once in the descriptor set")
    file, service_index, service = found[0]
    builder = Builder(d, query_allowlist)
    paths: JSON = {}
    for method_index, method in enumerate(service.method):
        rule = method.options.Extensions[annotations_pb2.http]
        if rule.WhichOneof("pattern") is None:
            if method.name in GRPC_ONLY:
                continue
            raise OpenApiError(f"{method.name} has no google.api.http rule")
        if method.name in GRPC_ONLY:
            raise OpenApiError(f"{method.name} is listed in GRPC_ONLY but has a REST binding")
        comment = d.comment(file, (6, service_index, 2, method_index))
        for n, (verb, path, each) in enumerate(http_rules(rule)):
            operation_id = method.name if n == 0 else f"{method.name}{n + 1}"
            item = paths.setdefault(_PATH_PARAM.sub(r"{\1}", path), {})
            if verb in item:
                raise OpenApiError(f"two operations for {verb.upper()} {path}")
            item[verb] = builder.operation(
                method, comment=comment, path=path, rule=each, operation_id=operation_id
            )
    both = builder.request_messages & builder.response_messages
    if both:  # their `required` would be wrong for one side
        raise OpenApiError(f"messages used in requests and answers alike: {sorted(both)}")
    for schema in builder.schemas.values():
        schema.pop("x-proto-message", None)
    version = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    document: JSON = {
        "openapi": "3.1.0",
        "info": {
            "title": "Stopcock REST API",
            "version": version,
            "description": d.comment(file, (6, service_index))
            + "\n\nGenerated from `proto/stopcock/v1/pipeline_service.proto` by"
            " `tools/openapi.py`. Every error answer has the body"
            " `{message, error_code, details}`.",
        },
        "tags": [
            {"name": "Pipelines", "description": "Pipeline definitions, lifecycle and data."},
            {"name": "API keys", "description": "Credentials (with STOPCOCK_AUTH=on)."},
            {"name": "System", "description": "Health, configuration and this document."},
        ],
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA} | dict(sorted(builder.schemas.items())),
            "responses": error_components(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "API key (apikey:...) or JWT",
                    "description": "Checked only when the manager runs with STOPCOCK_AUTH=on."
                    " The scopes of a requirement name the role it needs: `read` (a `write`"
                    " credential may call it too) or `write`.",
                }
            },
        },
        "security": [{"bearer": ["write"]}],
    }
    return document, builder.refused_query_fields


def render(document: JSON) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("descriptor_set", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    files = descriptor_pb2.FileDescriptorSet.FromString(args.descriptor_set.read_bytes())
    try:
        check_query_enums()
        document, refused = build(files, lua_query_allowlist())
    except OpenApiError as exc:
        parser.exit(1, f"tools/openapi.py: {exc}\n")
    for name in refused:
        print(
            f"tools/openapi.py: note: request field {name} is not a documented query parameter:"
            " envoy/stopcock.lua does not let it through",
            file=sys.stderr,
        )
    args.output.write_bytes(render(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
