"""Headers HTTP allows but gRPC metadata does not: dropped by Envoy, never a 5xx.

Requests are written by hand (http.client for HTTP/1.1, a few raw HTTP/2
frames for native gRPC) because httpx and grpcio refuse to send most of
these headers; a browser, a proxy or curl sends them all the same. The stack
runs with authentication on, so each answer also proves that the
Authorization header still reaches the manager.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import PROGRAM, WAIT, Stack, running_stack
from tests.tokens import Tokens

pytestmark = pytest.mark.e2e

Header = tuple[bytes, bytes]

# Legal HTTP/1.1 (or accepted by Envoy anyway), illegal as gRPC metadata: the
# request must be served as if the header were not there.
DROPPED: dict[str, Header] = {
    "punctuation in the name (the issue's example)": (b"W!1rc", b"x"),
    "more punctuation in the name": (b"x-a~b|c'd*e", b"x"),
    "UTF-8 in a value": (b"x-utf8", "Äpfel".encode()),
    "bytes 0x80-0xff in a value": (b"x-high", b"\x80\xfe\xff"),
    "a tab in a value": (b"x-tab", b"a\tb"),
    "binary metadata that is not base64": (b"x-foo-bin", b"!!!"),
    "binary metadata with stray bits": (b"x-foo-bin", b"YR=="),
    "a malformed grpc-timeout": (b"grpc-timeout", b"x"),
    "a REST client's grpc-timeout": (b"grpc-timeout", b"1n"),
    "another grpc- header": (b"grpc-foo", b"x"),
}
# A gRPC client's own deadline, by contrast, is honoured.
NATIVE_DROPPED = {case: h for case, h in DROPPED.items() if case != "a REST client's grpc-timeout"}
# Refused by Envoy's HTTP/1 codec before any filter runs (400 in the
# contract's shape), or dropped like the above if a later Envoy accepts them.
MAYBE_REFUSED: dict[str, Header] = {
    "braces in the name": (b"x{y}", b"x"),
    "a space in the name": (b"a b", b"x"),
    "UTF-8 in the name": ("Ä".encode(), b"x"),
    "a control character in a value": (b"x-ctl", b"a\x01b"),
    "DEL in a value": (b"x-del", b"a\x7fb"),
}
# Valid metadata that must still arrive (harmless to the call).
KEPT: dict[str, Header] = {
    "mixed case, underscore and dot": (b"X-Mixed_Case.ok", b"x"),
    "te": (b"te", b"x"),
}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    """A stack with authentication on, a write API key and a pipeline 'h'."""
    tokens = Tokens(tmp_path_factory.mktemp("keys"))
    with running_stack(tmp_path_factory.mktemp("headers"), tokens.env()) as stack:
        admin = {"authorization": f"Bearer {tokens.rs256()}"}
        r = stack.rest.post("/v0/api_keys", json={"name": "h", "role": "write"}, headers=admin)
        assert r.status_code == 201, r.text
        key: str = r.json()["api_key"]
        r = stack.rest.post(
            "/v0/pipelines", json={"name": "h", "program_code": PROGRAM}, headers=admin
        )
        assert r.status_code == 201, r.text
        yield stack, key


def http1(stack: Stack, method: str, path: str, headers: list[Header]) -> tuple[int, str, Any]:
    """(status, content type, JSON body) of a request with these exact header bytes."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.rest_port, timeout=WAIT)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("content-length", "0")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.getheader("content-type", ""), json.loads(response.read())
    finally:
        conn.close()


def bearer(key: str) -> Header:
    return (b"authorization", f"Bearer {key}".encode())


def assert_served(stack: Stack, key: str, header: Header, may_refuse: bool = False) -> None:
    """GET and POST endpoints give their normal answer (or the codec's 400)."""
    for method, path, status in (
        ("GET", "/v0/pipelines?selector=status", 200),
        ("POST", "/v0/pipelines/h/stop?force=true", 202),
    ):
        got, content_type, body = http1(stack, method, path, [bearer(key), header])
        assert content_type.startswith("application/json")
        if may_refuse and got == 400:
            assert body["error_code"] == "InvalidRequest", body
            assert set(body) == {"message", "error_code", "details"}
            continue
        assert got == status, (method, path, header, got, body)
        if method == "GET":
            assert [p["name"] for p in body] == ["h"]


@pytest.mark.parametrize("case", sorted(DROPPED))
def test_rest_drops_headers_that_cannot_be_metadata(secured: tuple[Stack, str], case: str) -> None:
    stack, key = secured
    assert_served(stack, key, DROPPED[case])
    # Without the credential the same request is refused as usual, not failed:
    # authentication is on, and only the illegal header was dropped.
    status, _, body = http1(stack, "GET", "/v0/pipelines", [DROPPED[case]])
    assert (status, body["error_code"]) == (401, "AuthenticationFailed")


@pytest.mark.parametrize("case", sorted(MAYBE_REFUSED))
def test_rest_headers_the_codec_refuses_are_a_400(secured: tuple[Stack, str], case: str) -> None:
    stack, key = secured
    assert_served(stack, key, MAYBE_REFUSED[case], may_refuse=True)


@pytest.mark.parametrize("case", sorted(KEPT))
def test_rest_keeps_valid_metadata(secured: tuple[Stack, str], case: str) -> None:
    stack, key = secured
    assert_served(stack, key, KEPT[case])


def test_an_illegal_authorization_value_is_no_credential(secured: tuple[Stack, str]) -> None:
    stack, key = secured
    header = (b"authorization", f"Bearer {key}\xff".encode("latin-1"))
    status, _, body = http1(stack, "GET", "/v0/pipelines", [header])
    assert (status, body["error_code"]) == (401, "AuthenticationFailed")
    assert "no credential" in body["message"]


# -- native gRPC through Envoy: a minimal HTTP/2 client ----------------------


def _hpack_int(value: int) -> bytes:
    """An HPACK integer with a 7-bit prefix (RFC 7541, 5.1)."""
    if value < 127:
        return bytes([value])
    out, value = [127], value - 127
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    return bytes([*out, value])


def _literal(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, new name, no Huffman coding."""
    return b"\x00" + _hpack_int(len(name)) + name + _hpack_int(len(value)) + value


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    head = struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream)
    return head + payload


DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0, 1, 3, 4, 7
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def grpc_messages(stack: Stack, headers: list[Header]) -> bytes:
    """The gRPC message bytes ListPipelines answers through Envoy (b"" on an error).

    An error is a trailers-only answer, which has no DATA frame; reading the
    DATA frames needs no HPACK decoder.
    """
    fields = b"".join(
        _literal(n, v)
        for n, v in [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/stopcock.v1.PipelineService/ListPipelines"),
            (b":authority", f"127.0.0.1:{stack.rest_port}".encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            *headers,
        ]
    )
    request = (
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + _frame(SETTINGS, 0, 0, b"")
        + _frame(HEADERS, END_HEADERS, 1, fields)
        + _frame(DATA, END_STREAM, 1, b"\x00\x00\x00\x00\x00")  # an empty request message
    )
    data = b""
    with socket.create_connection(("127.0.0.1", stack.rest_port), timeout=WAIT) as sock:
        sock.sendall(request)
        reader = sock.makefile("rb")
        while True:
            head = reader.read(9)
            assert len(head) == 9, "Envoy closed the connection"
            length = int.from_bytes(head[:3], "big")
            kind, flags = head[3], head[4]
            stream = int.from_bytes(head[5:], "big") & 0x7FFFFFFF
            payload = reader.read(length)
            if kind == SETTINGS and not flags & ACK:
                sock.sendall(_frame(SETTINGS, ACK, 0, b""))
            assert kind not in (RST_STREAM, GOAWAY), (kind, payload)
            if stream == 1 and kind == DATA:
                data += payload
            if stream == 1 and flags & END_STREAM:
                return data


@pytest.mark.parametrize("case", sorted(NATIVE_DROPPED))
def test_native_grpc_drops_headers_that_cannot_be_metadata(
    secured: tuple[Stack, str], case: str
) -> None:
    stack, key = secured
    name, value = NATIVE_DROPPED[case]
    header = (name.lower(), value)  # HTTP/2 names are lowercase
    # One length-prefixed, uncompressed ListPipelinesResponse: the call succeeded.
    messages = grpc_messages(stack, [bearer(key), header])
    assert messages[:1] == b"\x00" and int.from_bytes(messages[1:5], "big") == len(messages) - 5
    assert b"\x01h" in messages  # pipeline 'h' (field name: string of length 1)


def test_native_grpc_keeps_valid_metadata(secured: tuple[Stack, str]) -> None:
    stack, key = secured
    for header in [(b"x-trace-bin", b"YWJj"), (b"grpc-timeout", b"10S")]:
        assert grpc_messages(stack, [bearer(key), header])
    assert grpc_messages(stack, [(b"x-trace-bin", b"YWJj")]) == b""  # no credential: refused


def test_grpcurl_through_envoy_with_an_illegal_header(secured: tuple[Stack, str]) -> None:
    stack, key = secured
    grpcurl = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    assert grpcurl, "grpcurl is installed by `make tools` into .venv/bin"
    out = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            "-H",
            "W!1rc: x",
            "-H",
            f"authorization: Bearer {key}",
            f"127.0.0.1:{stack.rest_port}",
            "stopcock.v1.PipelineService/ListPipelines",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert [p["name"] for p in json.loads(out.stdout)["pipelines"]] == ["h"]
