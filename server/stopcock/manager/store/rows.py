"""A pipeline record as a row of the `pipelines` table, shared by every SQL store.

Both stores keep the same columns, in `FIELDS` order (the record's fields):
JSON columns hold compact JSON text (`tags` as a JSON array), `_since` and the
other integers are plain integers, everything else a string or NULL. Keeping
the encoding in one place keeps a record byte-for-byte the same in SQLite and
PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Protocol

from stopcock.manager.domain.model import PipelineRecord

FIELDS: list[str] = [f.name for f in dataclasses.fields(PipelineRecord)]
JSON_FIELDS = frozenset(
    {
        "runtime_config",
        "program_config",
        "tags",
        "program_error",
        "program_info",
        "deployment_error",
        "runtime_status_details",
        "storage_status_details",
        "resources_status_details",
    }
)
# Stored as 0/1 integers in every store, so that a row reads the same back.
BOOL_FIELDS = frozenset({"silent_bootstrap", "concurrent_bootstrap", "bootstrap_approved"})


class Row(Protocol):
    """A row read by column name (sqlite3.Row, a psycopg dict row)."""

    def __getitem__(self, key: str, /) -> Any: ...


def to_row(rec: PipelineRecord) -> list[Any]:
    """The record's column values, in `FIELDS` order."""
    row: list[Any] = []
    for name in FIELDS:
        value = getattr(rec, name)
        if name in JSON_FIELDS and value is not None:
            value = json.dumps(list(value) if name == "tags" else value, separators=(",", ":"))
        elif name in BOOL_FIELDS:
            value = int(value)
        row.append(value)
    return row


def from_row(row: Row) -> PipelineRecord:
    values: dict[str, Any] = {}
    for name in FIELDS:
        try:
            value = row[name]
        except (KeyError, IndexError):
            # A record kept (pipeline_history) before the field existed: its default.
            continue
        if name in BOOL_FIELDS:
            value = bool(value)
        elif name in JSON_FIELDS and value is not None:
            value = json.loads(value)
            if name == "tags":
                value = tuple(value)
        values[name] = value
    return PipelineRecord(**values)
