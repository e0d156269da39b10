"""What a user writes to define a pipeline: checked on the client, converted to the proto.

A definition file holds the REST request body of create/replace (`name`,
`program_code`, `runtime_config`, ...). It may also be the output of
`stopcock get NAME -o json|yaml` edited in place: the fields that only
describe a pipeline's state (id, statuses, ...) are ignored then, so that
getting, editing and applying round-trips. Any other unknown field is
refused, because a misspelt key (`runtime_confg`) silently ignored would
leave the pipeline with defaults the user did not choose.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from stopcock.client.errors import StopcockError
from stopcock.v1 import pipeline_service_pb2 as pb

DEFINITION_FIELDS = frozenset(f.name for f in pb.PipelineDefinition.DESCRIPTOR.fields)
STATE_FIELDS = frozenset(f.name for f in pb.Pipeline.DESCRIPTOR.fields) - DEFINITION_FIELDS
_STRINGS = ("name", "description", "program_code", "udf_rust", "udf_toml")
_OBJECTS = ("runtime_config", "program_config")


def _invalid(message: str) -> StopcockError:
    return StopcockError(message, "InvalidRequest", 400)


@dataclass(frozen=True)
class PipelineDefinition:
    """A pipeline's definition: name, SQL program and configuration.

    `runtime_config` / `program_config` None means "all defaults".
    """

    name: str
    program_code: str = ""
    description: str = ""
    runtime_config: dict[str, Any] | None = None
    program_config: dict[str, Any] | None = None
    udf_rust: str = ""
    udf_toml: str = ""
    tags: tuple[str, ...] = field(default=())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineDefinition:
        """From REST JSON (see the module doc); StopcockError InvalidRequest if malformed."""
        if not isinstance(data, Mapping):
            raise _invalid("a pipeline definition must be a JSON object")
        unknown = sorted(set(data) - DEFINITION_FIELDS - STATE_FIELDS)
        if unknown:
            raise _invalid(
                f"unknown field(s) {', '.join(unknown)} in the pipeline definition; "
                f"expected some of: {', '.join(sorted(DEFINITION_FIELDS))}"
            )
        for key in _STRINGS:
            if not isinstance(data.get(key, ""), str | None):
                raise _invalid(f"'{key}' must be a string")
        for key in _OBJECTS:
            if not isinstance(data.get(key), dict | None):
                raise _invalid(f"'{key}' must be an object")
        tags = data.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise _invalid("'tags' must be a list of strings")
        name = data.get("name")
        if not name:
            raise _invalid("the pipeline definition needs a 'name'")
        return cls(
            name=name,
            program_code=data.get("program_code") or "",
            description=data.get("description") or "",
            runtime_config=data.get("runtime_config"),
            program_config=data.get("program_config"),
            udf_rust=data.get("udf_rust") or "",
            udf_toml=data.get("udf_toml") or "",
            tags=tuple(tags),
        )

    @classmethod
    def from_text(cls, text: str, yaml: bool = False) -> PipelineDefinition:
        """From a JSON document, or YAML when `yaml` (JSON is tried first either way).

        A text that starts like a JSON object is reported as bad JSON, not
        as bad YAML: that is what its author meant to write.
        """
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            if not yaml or text.lstrip().startswith("{"):
                raise _invalid(f"the pipeline definition is not valid JSON: {exc}") from exc
        import yaml as pyyaml

        try:
            loaded = pyyaml.safe_load(text)
        except pyyaml.YAMLError as exc:
            problem = " ".join(str(exc).split())
            raise _invalid(f"the pipeline definition is not valid YAML: {problem}") from exc
        return cls.from_dict(loaded)

    def to_proto(self) -> pb.PipelineDefinition:
        msg = pb.PipelineDefinition(
            name=self.name,
            description=self.description,
            program_code=self.program_code,
            udf_rust=self.udf_rust,
            udf_toml=self.udf_toml,
            tags=list(self.tags),
        )
        try:
            if self.runtime_config is not None:
                json_format.ParseDict(self.runtime_config, msg.runtime_config)
            if self.program_config is not None:
                json_format.ParseDict(self.program_config, msg.program_config)
        except json_format.ParseError as exc:
            raise _invalid(f"the configuration is not JSON data: {exc}") from exc
        return msg
