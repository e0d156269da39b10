"""API fuzzing from the OpenAPI document, through a real stack with authentication on.

schemathesis generates requests for every documented operation from
generated/openapi.json (the bytes GET /v0/openapi.json serves, as
tests/test_openapi.py checks) and sends them through Envoy to a manager that
runs real runtime processes, with a write API key as the bearer token. Valid
and invalid data alike (the coverage phase's boundary values, then random
examples), undeclared methods, and each operation once more without a
credential and with a wrong one. Every answer is checked:

* schemathesis' own checks: never a 5xx (but the contract's 503 for a
  pipeline that cannot take the call now, e.g. a checkpoint of a stopped
  pipeline the fuzzer created); status codes, content types,
  headers and JSON bodies as documented; invalid data refused with a 4xx;
  undeclared methods answered 405 with `Allow`; the credential enforced;
* `error_shape` below: every non-2xx answer is the contract's JSON error body.

Reproducible: the generation is derandomized and seeded. Longer local runs:
STOPCOCK_FUZZ_EXAMPLES=500 (examples per operation; default 20) and another
STOPCOCK_FUZZ_SEED.

Left out, on purpose:
* WatchPipeline streams until the pipeline is deleted, WatchPipelines (`GET
  /v0/watch`) until the client leaves, and `logs?follow=true` until its
  runtime ends: the watches are not called (tests/test_watch_all.py covers a
  bad selector), the log never followed.
* QUERY, among the undeclared methods: Envoy refuses a QUERY request without
  a content type (400 InvalidRequest) before any route could answer 405.
* "Invalid data accepted" when the invalid part is a null member (the proto3
  JSON mapping reads null as the member left out), or a list of strings
  given as one string or holding lists or nulls, which Envoy's transcoder
  reads leniently (filter_failure below; nothing before it parses bodies).
* positive_data_acceptance: valid data is routinely refused for the
  pipeline's state (starting a pipeline whose program failed to compile,
  400 CannotStartWithCompilationError), which the document cannot express.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.core.failures import AcceptedNegativeData, ServerError
from stopcock.manager.auth import api_keys
from stopcock.manager.domain.model import now_us
from stopcock.manager.store import ApiKeyRecord
from stopcock.manager.store.sqlite import SqliteStore

from tests.support import Stack
from tests.tokens import Tokens

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
DOCUMENT = REPO / "generated" / "openapi.json"
DOCUMENT_JSON: dict[str, Any] = json.loads(DOCUMENT.read_bytes())
EXAMPLES = int(os.environ.get("STOPCOCK_FUZZ_EXAMPLES", "20"))
SEED = int(os.environ.get("STOPCOCK_FUZZ_SEED", "20261129"))
ERROR_MEMBERS = {"message", "error_code", "details"}
# 503s the contract gives by design when a pipeline cannot take a call now
# (not deployed, paused, unreachable): documented, retryable, not a fault.
PIPELINE_UNAVAILABLE = {
    "PipelineInteractionNotDeployed",
    "PipelineInteractionUnreachable",
    "PipelineUnavailable",
}

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {"max-examples": EXAMPLES, "deterministic": True},
        "phases": {
            "stateful": {"enabled": False},
            "coverage": {
                "unexpected-methods": ["get", "put", "post", "delete", "options", "patch", "trace"]
            },
        },
        "request-timeout": 30,
        "checks": {"positive_data_acceptance": {"enabled": False}},
        "operations": [
            {"include-operation-id": "WatchPipeline", "enabled": False},
            {"include-operation-id": "WatchPipelines", "enabled": False},
            {"include-operation-id": "GetPipelineLogs", "parameters": {"follow": False}},
        ],
    }
)
schema = schemathesis.openapi.from_path(DOCUMENT, config=CONFIG)
# Minted here, not by the server: schemathesis builds the coverage phase's
# cases, credential included, when pytest collects them.
WRITE_KEY = api_keys.mint()


@schema.auth(refresh_interval=None)
class WriteKey:
    """The fuzz stack's write API key, as a bearer token."""

    def get(self, case: Any, ctx: Any) -> str:
        return WRITE_KEY

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def as_transcoder_reads(value: Any) -> Any:
    """A JSON value given for a list of strings, as Envoy's transcoder reads it.

    protobuf's JSON parser is lenient there: one string is a list of it,
    nested lists are flattened and nulls dropped ("a" and [["a"], null] are
    ["a"]), where the proto3 JSON mapping and Feldera refuse them.
    """
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        return value
    read: list[Any] = []
    for item in value:
        if isinstance(item, list):
            read.extend(as_transcoder_reads(item))
        elif item is not None:
            read.append(item)
    return read


def list_fields(case: Any) -> set[str]:
    """The members of the operation's JSON body documented as lists."""
    operation = DOCUMENT_JSON["paths"][case.operation.path][case.method.lower()]
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    if "$ref" in schema:
        schema = DOCUMENT_JSON["components"]["schemas"][schema["$ref"].rpartition("/")[2]]
    return {k for k, v in schema.get("properties", {}).items() if v.get("type") == "array"}


def lenient_read(case: Any) -> bool:
    """Whether the body is invalid as sent but valid as the transcoder reads it."""
    if not isinstance(case.body, dict):
        return False
    lists = list_fields(case)
    # null is any field left out (the proto3 JSON mapping's rule).
    read = {
        k: as_transcoder_reads(v) if k in lists else v
        for k, v in case.body.items()
        if v is not None
    }
    body = case.operation.get_body_for_media_type(case.media_type)
    return read != case.body and body is not None and body.is_valid(read)


def deliberate_503(response: Any) -> bool:
    """The contract's "not now" answer about a pipeline (with Retry-After), not a fault."""
    if response.status_code != 503:
        return False
    return json.loads(response.content).get("error_code") in PIPELINE_UNAVAILABLE


@schema.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    if isinstance(failure, AcceptedNegativeData):
        return not lenient_read(case)
    if isinstance(failure, ServerError):
        return not deliberate_503(response)
    return True


# Ingress takes newline-delimited JSON as text (the document's schema: a string).
schemathesis.serializer.alias("application/x-ndjson", "text/plain")


def error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every non-2xx answer is {"message": str, "error_code": str, "details": object|null}."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.split(";")[0] == "application/json", f"error as {content_type!r}"
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) == ERROR_MEMBERS, f"not the error shape: {body!r}"
    assert isinstance(body["message"], str) and body["message"], body
    assert isinstance(body["error_code"], str) and body["error_code"], body
    assert body["details"] is None or isinstance(body["details"], dict), body
    return True


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack with authentication on, WRITE_KEY stored as `stopcock api-key create` does."""
    tokens = Tokens(tmp_path_factory.mktemp("fuzz-keys"))
    stack = Stack(tmp_path_factory.mktemp("fuzz"), tokens.env())
    try:
        stack.data_dir.mkdir(parents=True)
        store = SqliteStore(stack.data_dir / "stopcock.db")
        try:
            store.put_api_key(
                ApiKeyRecord(
                    str(uuid.uuid4()),
                    "fuzz-writer",
                    "write",
                    api_keys.key_hash(WRITE_KEY),
                    now_us(),
                )
            )
        finally:
            store.close()
        stack.start_manager()
        stack.start_envoy()
        r = stack.rest.get("/v0/api_keys", headers={"authorization": f"Bearer {WRITE_KEY}"})
        assert r.status_code == 200, r.text
        yield stack
    finally:
        stack.close()


@schema.parametrize()
def test_api(case: Any, secured: Stack) -> None:
    case.call_and_validate(
        base_url=f"http://127.0.0.1:{secured.rest_port}", additional_checks=[error_shape]
    )
