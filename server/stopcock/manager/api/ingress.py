"""Checks and translations for data requests (ingress, query, tokens).

Stopcock reads JSON and CSV and writes JSON; the other formats Feldera
clients may ask for are refused with a clear error instead of being misread.
"""

from __future__ import annotations

import uuid

from stopcock.internal.v1 import runtime_service_pb2 as runtime_pb
from stopcock.manager.domain import errors
from stopcock.manager.domain.model import PipelineRecord
from stopcock.v1 import pipeline_service_pb2 as pb

UPDATE_FORMATS = ("raw", "insert_delete")
# Feldera's ingress reads CSV when the request names no format
# (adapters/src/transport/http/input.rs, HttpInputTransport::default_format);
# its SDK always names one.
DEFAULT_FORMAT = "csv"


def _unsupported(what: str, value: str, supported: str) -> errors.ApiError:
    return errors.bad_request(
        "UnsupportedFormat",
        f"{what} '{value}' is not supported by Stopcock: use {supported}",
        {what: value},
    )


def check_format(fmt: str, json_flavor: str, update_format: str) -> None:
    if (fmt or DEFAULT_FORMAT) == "csv":
        # Feldera reads CSV with its default configuration whatever the
        # query holds (CsvInputFormat::config_from_http_request): the JSON
        # parameters do not apply.
        return
    if fmt != "json":
        raise _unsupported("format", fmt, "'json' or 'csv'")
    if json_flavor not in ("", "default"):
        raise _unsupported("json_flavor", json_flavor, "'default'")
    if update_format not in ("", *UPDATE_FORMATS):
        raise _unsupported("update_format", update_format, "'raw' or 'insert_delete'")


def to_runtime(request: pb.IngestRowsRequest) -> runtime_pb.IngestRequest:
    """The first message to the runtime: the parameters and the first chunk."""
    return runtime_pb.IngestRequest(
        table=request.table,
        update_format=request.update_format or "raw",
        array=request.array if request.HasField("array") else False,
        force=request.force,
        data=request.body.data,
        format=request.format or DEFAULT_FORMAT,
    )


def new_token(rec: PipelineRecord) -> str:
    """A completion token: which deployment took the rows, and a unique part."""
    return f"{rec.deployment_id}.{uuid.uuid4().hex}"


def check_token(rec: PipelineRecord, token: str) -> None:
    """Refuses a token IngestRows did not give for the pipeline's current deployment.

    A token names the deployment that took its rows. One of an earlier
    deployment cannot be answered for: that runtime is gone, and whether
    its rows survived depends on the checkpoints taken since.
    """
    deployment, _, unique = token.partition(".")
    try:
        uuid.UUID(deployment)
        uuid.UUID(hex=unique)
    except ValueError:
        raise errors.bad_request(
            "InvalidCompletionToken",
            f"'{token}' is not a completion token of pipeline '{rec.name}'",
            {"token": token},
        ) from None
    if deployment != rec.deployment_id:
        raise errors.bad_request(
            "InvalidCompletionToken",
            f"'{token}' was given by another deployment of pipeline '{rec.name}' (it has "
            "stopped or restarted since): ask for a token of the current deployment",
            {"token": token, "current_deployment_id": rec.deployment_id},
        )


# The ad-hoc answer formats Stopcock writes, and their content types (Feldera's
# AdHocResultFormat also has arrow_ipc, parquet and hash: refused).
QUERY_CONTENT_TYPES = {"json": "application/x-ndjson", "text": "text/plain"}


def check_query(name: str, pipeline_name: str, fmt: str, sql: str) -> str:
    """Refuses a bad query request; returns its answer's format."""
    if pipeline_name and pipeline_name != name:
        raise errors.bad_request(
            "InvalidRequest",
            f"pipeline_name '{pipeline_name}' does not match the path's '{name}'",
            {"pipeline_name": pipeline_name},
        )
    if fmt not in ("", *QUERY_CONTENT_TYPES):
        raise _unsupported(
            "format", fmt, "'json' (newline-delimited JSON) or 'text' (Feldera's text table)"
        )
    if not sql.strip():
        raise errors.bad_request("InvalidQuery", "The query is empty: pass it as `sql`", {})
    return fmt or "json"
