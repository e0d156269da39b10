"""Request and answer sizes (stopcock.limits), through the real Envoy and manager.

Programs far over gRPC's 4 MiB default go in and come back intact; a body
over the limit is 413 PayloadTooLarge in the contract's shape, answered after
the whole body was read (a client that writes everything before reading, as
http.client and requests do, gets the answer, not a reset); an answer over
the limit is 500 ResponseTooLarge. With authentication on too.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from stopcock import limits, sidecar
from stopcock.client import Client
from stopcock.v1 import pipeline_service_pb2 as pb
from stopcock.v1 import pipeline_service_pb2_grpc as pb_grpc

from tests.support import Stack, running_stack, wait_until
from tests.tokens import Tokens

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
# A 64 MiB program (a table and a long comment): its JSON body is a few bytes more.
_HEAD = "CREATE TABLE t (id INTEGER NOT NULL);\n-- "
PROGRAM_64 = _HEAD + "x" * (64 * MIB - len(_HEAD) - 1) + "\n"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Any  # http.client's or httpx's: both index names case-insensitively
    body: bytes


def answer_of(r: httpx.Response) -> Answer:
    return Answer(r.status_code, r.headers, r.content)


def assert_error(answer: Answer, code: int, error_code: str) -> Any:
    assert answer.status == code, answer.body[:300]
    assert answer.headers["content-type"] == "application/json"
    error = json.loads(answer.body)
    assert set(error) == {"message", "error_code", "details"}, error
    assert error["error_code"] == error_code, error
    assert isinstance(error["message"], str) and error["message"]
    return error


def post_whole(stack: Stack, path: str, body: bytes | Iterator[bytes], **headers: str) -> Answer:
    """POSTs the whole body before reading the answer, as http.client does.

    A server that answered early and closed would make the send fail with a
    reset (ConnectionResetError / BrokenPipeError), failing the test.
    """
    conn = http.client.HTTPConnection("127.0.0.1", stack.rest_port, timeout=60)
    try:
        conn.request(
            "POST",
            path,
            body=body,
            headers={"content-type": "application/json", **headers},
            encode_chunked=not isinstance(body, bytes),
        )
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: the large programs stay out of the shared one."""
    with running_stack(tmp_path_factory.mktemp("limits")) as stack:
        yield stack


def test_the_limits_agree_with_envoy() -> None:
    lua = (REPO / "envoy" / "stopcock.lua").read_text()
    found = re.search(r"^local MAX_REQUEST_BODY_BYTES = (\d+)$", lua, re.M)
    assert found is not None
    assert int(found.group(1)) == limits.MAX_REQUEST_BODY_BYTES
    rendered = sidecar.render_envoy_config(
        rest_address="127.0.0.1",
        rest_port=8080,
        grpc_host="127.0.0.1",
        grpc_port=50051,
        descriptor_path=Path("/descriptor.pb"),
        lua_path=Path("/stopcock.lua"),
    )
    listener = yaml.safe_load(rendered)["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    transcoder = next(
        f["typed_config"]
        for f in hcm["http_filters"]
        if f["name"] == "envoy.filters.http.grpc_json_transcoder"
    )
    assert transcoder["max_response_body_size"] == limits.MAX_RESPONSE_BODY_BYTES
    too_large = next(
        m
        for m in hcm["local_reply_config"]["mappers"]
        if m.get("body_format_override", {}).get("json_format", {}).get("error_code")
        == "ResponseTooLarge"
    )
    json_format = too_large["body_format_override"]["json_format"]
    assert json_format["details"] == {"limit_bytes": limits.MAX_RESPONSE_BODY_BYTES}
    assert str(limits.MAX_RESPONSE_BODY_BYTES) in json_format["message"]
    # Every REST body under the limit fits the manager's gRPC limit once decoded
    # (JSON strings only shrink), with room for the rest of the message.
    assert limits.MAX_MESSAGE_BYTES > limits.MAX_REQUEST_BODY_BYTES


@pytest.mark.e2e
def test_a_64_mib_program_goes_in_and_comes_back_intact(big: Stack) -> None:
    body = json.dumps({"name": "big", "program_code": PROGRAM_64}).encode()
    assert 64 * MIB < len(body) < limits.MAX_REQUEST_BODY_BYTES
    answer = post_whole(big, "/v0/pipelines", body)
    assert answer.status == 201, answer.body[:300]
    assert digest(json.loads(answer.body)["program_code"]) == digest(PROGRAM_64)

    # Compiling reads all 64 MiB with sqlglot's pure-Python tokenizer: seconds, more on a busy host.
    wait_until(
        lambda: big.get("big", "status")["program_status"] == "Success",
        "big to compile",
        timeout=180,
    )
    r = big.rest.get("/v0/pipelines/big", timeout=60)
    assert r.status_code == 200
    assert digest(r.json()["program_code"]) == digest(PROGRAM_64)
    # A list answer larger than Envoy's stream buffer (32 MiB) is unwrapped whole.
    r = big.rest.get("/v0/pipelines", timeout=60)
    assert r.status_code == 200
    assert [digest(p["program_code"]) for p in r.json()] == [digest(PROGRAM_64)]
    # The Python client (and so the CLI) takes such an answer too.
    with Client(f"127.0.0.1:{big.grpc_port}") as client:
        assert digest(client.get("big").program_code or "") == digest(PROGRAM_64)


@pytest.mark.e2e
def test_a_body_over_the_limit_is_413_once_read_to_its_end(big: Stack) -> None:
    limit = limits.MAX_REQUEST_BODY_BYTES
    prefix = b'{"name": "too-big", "program_code": "'
    body = prefix + b"x" * (limit + 1 - len(prefix) - 2) + b'"}'
    assert len(body) == limit + 1
    error = assert_error(post_whole(big, "/v0/pipelines", body), 413, "PayloadTooLarge")
    assert error["details"] == {"limit_bytes": limit}
    # Nothing reached the manager: no pipeline was created.
    assert big.rest.get("/v0/pipelines/too-big").status_code == 404
    # PUT too, and a body without Content-Length (chunked) is counted.
    chunked = post_whole(big, "/v0/pipelines", iter([body[:MIB], body[MIB:]]))
    assert assert_error(chunked, 413, "PayloadTooLarge")["details"] == {"limit_bytes": limit}
    r = big.rest.put("/v0/pipelines/too-big", content=body, timeout=60)
    assert_error(answer_of(r), 413, "PayloadTooLarge")
    assert big.rest.get("/v0/pipelines/too-big").status_code == 404


@pytest.mark.e2e
def test_a_body_that_grows_past_the_manager_limit_when_decoded_is_413(big: Stack) -> None:
    """Numbers in a Struct take 11 bytes of protobuf for 2 of JSON."""
    zeros = limits.MAX_MESSAGE_BYTES // 10
    body = json.dumps(
        {"name": "grows", "program_code": "", "runtime_config": {"x": [0] * zeros}},
        separators=(",", ":"),
    )
    assert len(body) < limits.MAX_REQUEST_BODY_BYTES
    r = big.rest.post(
        "/v0/pipelines", content=body, headers={"content-type": "application/json"}, timeout=60
    )
    error = assert_error(answer_of(r), 413, "PayloadTooLarge")
    assert error["details"] == {"limit_bytes": limits.MAX_MESSAGE_BYTES}
    assert big.rest.get("/v0/pipelines/grows").status_code == 404


@pytest.mark.e2e
def test_an_answer_over_the_limit_is_500_response_too_large(big: Stack) -> None:
    """A list answer is held whole to unwrap it: over the limit, it is refused.

    Control characters print as six-byte escapes, so a pipeline with 44 MiB
    of them (created over gRPC) lists as 264 MiB of JSON: over the limit
    without the stack holding several large programs.
    """
    request = pb.CreatePipelineRequest(
        pipeline=pb.PipelineDefinition(name="wide", program_code="\x01" * (44 * MIB))
    )
    options = [("grpc.max_receive_message_length", -1)]  # the answer holds the program
    with grpc.insecure_channel(f"127.0.0.1:{big.grpc_port}", options=options) as channel:
        pb_grpc.PipelineServiceStub(channel).CreatePipeline(request, timeout=60)
    r = big.rest.get("/v0/pipelines", timeout=120)
    error = assert_error(answer_of(r), 500, "ResponseTooLarge")
    assert error["details"] == {"limit_bytes": limits.MAX_RESPONSE_BODY_BYTES}
    assert "selector=status" in error["message"]
    # What the message suggests works.
    r = big.rest.get("/v0/pipelines", params={"selector": "status"})
    assert r.status_code == 200 and "wide" in [p["name"] for p in r.json()]


@pytest.mark.e2e
def test_with_authentication_on(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The size is judged before the credential; a large program needs one as usual."""
    tokens = Tokens(tmp_path_factory.mktemp("limits-keys"))
    with running_stack(tmp_path_factory.mktemp("limits-auth"), tokens.env()) as stack:
        admin = {"authorization": f"Bearer {tokens.rs256()}"}
        key = stack.rest.post(
            "/v0/api_keys", json={"name": "writer", "role": "write"}, headers=admin
        ).json()["api_key"]
        over = b'{"name": "x", "program_code": "' + b"x" * limits.MAX_REQUEST_BODY_BYTES + b'"}'
        assert_error(post_whole(stack, "/v0/pipelines", over), 413, "PayloadTooLarge")

        program = "-- " + "y" * (8 * MIB)  # twice gRPC's default limit
        body = json.dumps({"name": "eight", "program_code": program}).encode()
        assert_error(post_whole(stack, "/v0/pipelines", body), 401, "AuthenticationFailed")
        created = post_whole(stack, "/v0/pipelines", body, authorization=f"Bearer {key}")
        assert created.status == 201, created.body[:300]
        r = httpx.get(
            f"http://127.0.0.1:{stack.rest_port}/v0/pipelines/eight",
            headers={"authorization": f"Bearer {key}"},
            timeout=60,
        )
        assert r.status_code == 200 and r.json()["program_code"] == program
