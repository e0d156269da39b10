"""Pipelines printed as JSON by the manager: the REST list (ListPipelinesJson).

Why: turning 1,000 Pipeline messages into ~1 MB of JSON in Envoy's
transcoder took most of `GET /v0/pipelines` (p50 ~80 ms through Envoy,
against ~11 ms of work in the manager). So the REST list is a
google.api.HttpBody, which Envoy passes through untouched, and the manager
prints it here: each pipeline's JSON once per version, cached, so that a
list is a join of cached bytes.

What is printed is what the transcoder would have printed for the same
`Pipeline` message (convert.to_proto), with the options of envoy/envoy.yaml
(`print_options`: `preserve_proto_field_names`, `always_print_primitive_fields`):
`json_format` with the matching options (snake_case names, every field
without presence, zero values and empty lists included; unset messages and
proto3 `optional` fields left out; Timestamps as RFC 3339; Struct and Value
as JSON). Two differences in spelling, none in meaning:
  * Struct and Value numbers are doubles. Envoy (C++) prints an integral
    double as an integer (`4`); Python's json_format prints `4.0`, which a
    Python client would read as a float. So integral numbers are printed as
    integers here, as Envoy does (within ±2**53, where a double is exactly
    an integer; Envoy would print `1e+15` where this prints
    `1000000000000000`: the same number).
  * Envoy escapes `<`, `>`, U+2028 and U+2029 (`\u003c`...); they are
    left as they are here (UTF-8, as the rest of the text). The members of
    a Struct come in the order of the map that holds them, in Envoy as here
    (neither is the order a client sent). Pipeline fields are in
    field-number order and separators compact, as Envoy prints them: a
    pipeline without those characters and Structs prints byte for byte
    the same.
The Lua filter rewrites nothing inside a pipeline on this route (it only
sets the status and drops internal headers), so these bytes reach the
client as they are. tests/test_rest_list.py compares them, field by field,
with Envoy's own transcoding of the same pipelines.

The cache is exact: records are immutable, and every write makes a new one
through `model.evolve`, which bumps `refresh_version`, so a pipeline id and
a version name one content forever. That holds on SQLite (`Records`, the
manager's exact cache) and on PostgreSQL replicas (`SharedRecords`: reads
are queries, and versions are serialized by the row's lock, so every
replica that reads a version reads the same row). An entry is used only
when the record's version is the one it was printed from.

The cache is bounded: one entry per pipeline (a newer version replaces the
older one), ids that a list no longer returns (deleted pipelines) are
dropped after that list, and a rendering larger than MAX_CACHED_BYTES (a
pipeline with a huge program) is printed every time rather than kept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from stopcock import limits
from stopcock.manager.api import convert
from stopcock.manager.domain import errors
from stopcock.manager.domain.model import PipelineRecord
from stopcock.v1 import pipeline_service_pb2 as pb

# Larger renderings are not cached: they cost about as much to print as to
# send, and keeping them would hold another copy of every huge program.
MAX_CACHED_BYTES = 1 << 20
# Beyond this a double may not be an integer exactly; Envoy prints those in
# exponent form, and so does json.dumps.
_EXACT_INTEGERS = 1 << 53
_FIELD_ORDER = tuple(field.name for field in pb.Pipeline.DESCRIPTOR.fields)


def _integral(value: Any) -> Any:
    """`value` (from json_format) with integral doubles as ints, as Envoy prints them."""
    if isinstance(value, float):
        if value.is_integer() and -_EXACT_INTEGERS <= value <= _EXACT_INTEGERS:
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def pipeline_json(pipeline: pb.Pipeline) -> bytes:
    """The JSON Envoy's transcoder prints for `pipeline` (see the module docstring)."""
    printed = json_format.MessageToDict(
        pipeline,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    ordered = {name: _integral(printed[name]) for name in _FIELD_ORDER if name in printed}
    text = json.dumps(ordered, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode()


class PipelineJson:
    """Each pipeline's JSON, printed once per (version, selector)."""

    def __init__(self, max_cached_bytes: int = MAX_CACHED_BYTES) -> None:
        self._max_cached_bytes = max_cached_bytes
        # pipeline id -> (refresh_version, (description, tags), {full: JSON}).
        # Client metadata changes without a refresh_version bump (model.annotate),
        # so an entry serves only a record with the same metadata.
        self._entries: dict[str, tuple[int, tuple[str, tuple[str, ...]], dict[bool, bytes]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def cached(self, pipeline_id: str) -> tuple[int, frozenset[bool]] | None:
        """(version, selectors) held for a pipeline, or None: for tests."""
        entry = self._entries.get(pipeline_id)
        return None if entry is None else (entry[0], frozenset(entry[2]))

    def render(self, rec: PipelineRecord, full: bool) -> bytes:
        entry = self._entries.get(rec.id)
        keep: dict[bool, bytes] | None
        metadata = (rec.description, rec.tags)
        if entry is not None and entry[0] == rec.refresh_version and entry[1] == metadata:
            keep = entry[2]
            text = keep.get(full)
            if text is not None:
                return text
        elif entry is None or entry[0] <= rec.refresh_version:
            keep = {}
            self._entries[rec.id] = (rec.refresh_version, metadata, keep)
        else:
            # Older than the cached version: a replica's read that began
            # before another's saw a newer row. Printed, not kept.
            keep = None
        text = pipeline_json(convert.to_proto(rec, full, rest=True))
        if keep is not None and len(text) <= self._max_cached_bytes:
            keep[full] = text
        return text

    def list_json(
        self, records: Sequence[PipelineRecord], full: bool, *, connectors: bool = False
    ) -> bytes:
        """The JSON array of `records` (every pipeline: the cache keeps only these).

        Raises ResponseTooLarge past the REST face's answer limit, as Envoy
        would, before joining (and sending) that much.
        """
        if connectors:  # live figures: printed each time, not cached
            parts = [pipeline_json(convert.with_connectors(rec, rest=True)) for rec in records]
        else:
            parts = [self.render(rec, full) for rec in records]
        # Every listed id now has an entry, so more entries than records
        # means some belong to pipelines deleted since: drop those.
        if len(self._entries) > len(records):
            live = {rec.id for rec in records}
            for pipeline_id in [i for i in self._entries if i not in live]:
                del self._entries[pipeline_id]
        size = sum(map(len, parts)) + max(len(parts) - 1, 0) + 2
        if size > limits.MAX_RESPONSE_BODY_BYTES:
            raise errors.response_too_large(limits.MAX_RESPONSE_BODY_BYTES)
        return b"[" + b",".join(parts) + b"]"
