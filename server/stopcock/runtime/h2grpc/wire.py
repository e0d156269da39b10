"""gRPC's encoding over HTTP/2, as far as a server needs it (no I/O here).

See https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md: a message
is a 1-byte compressed flag and a 4-byte big-endian length, then its bytes;
the status travels in trailers (`grpc-status`, `grpc-message`
percent-encoded) beside the custom trailing metadata; a `-bin` key carries
base64 (padding optional on the wire); `grpc-timeout` is up to 8 digits and
a unit.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import grpc

MESSAGE_HEADER = struct.Struct(">BI")
PREFIX = MESSAGE_HEADER.size  # 5

# Headers that are gRPC's own (or HTTP/2's): not the caller's metadata.
_RESERVED = frozenset(
    {
        b"content-type",
        b"te",
        b"grpc-timeout",
        b"grpc-encoding",
        b"grpc-accept-encoding",
        b"grpc-status",
        b"grpc-message",
    }
)
_TIMEOUT = re.compile(rb"([0-9]{1,8})([HMSmun])")
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_KEY = re.compile(r"[0-9a-z_.\-]+")
# Percent-encoding of grpc-message: everything but printable ASCII, and '%' itself.
_PLAIN = frozenset(range(0x20, 0x7F)) - {ord("%")}

Metadata = tuple[tuple[str, str | bytes], ...]
Header = tuple[bytes, bytes]


def frame(payload: bytes) -> bytes:
    """`payload` as one length-prefixed, uncompressed gRPC message."""
    return MESSAGE_HEADER.pack(0, len(payload)) + payload


def parse_timeout(value: bytes) -> float | None:
    """Seconds in a `grpc-timeout` value; None if malformed (then it is ignored)."""
    match = _TIMEOUT.fullmatch(value)
    if match is None:
        return None
    return int(match[1]) * _TIMEOUT_UNITS[match[2]]


def invocation_metadata(headers: Iterable[Header]) -> Metadata:
    """The caller's metadata as grpc.aio gives it: str values, bytes for `-bin` keys."""
    pairs: list[tuple[str, str | bytes]] = []
    for raw_key, raw_value in headers:
        if raw_key.startswith(b":") or raw_key in _RESERVED:
            continue
        key = raw_key.decode("latin-1")
        if key.endswith("-bin"):
            try:
                pairs.append((key, _unbase64(raw_value)))
            except (binascii.Error, ValueError):
                continue  # as grpc does with a value it cannot decode: dropped
        else:
            pairs.append((key, raw_value.decode("latin-1")))
    return tuple(pairs)


def _unbase64(value: bytes) -> bytes:
    return base64.b64decode(value + b"=" * (-len(value) % 4), validate=True)


def metadata_headers(metadata: Sequence[tuple[str, Any]] | None) -> list[Header]:
    """Application metadata as HTTP/2 headers; ValueError for what gRPC would refuse."""
    headers: list[Header] = []
    for key, value in metadata or ():
        if not isinstance(key, str) or _KEY.fullmatch(key) is None:
            raise ValueError(f"invalid metadata key {key!r}")
        if key.startswith("grpc-"):
            raise ValueError(f"metadata key {key!r} is reserved")
        if key.endswith("-bin"):
            data = value.encode() if isinstance(value, str) else bytes(value)
            headers.append((key.encode(), base64.b64encode(data).rstrip(b"=")))
            continue
        text = value.decode("ascii") if isinstance(value, bytes) else str(value)
        if not text.isascii() or not text.isprintable():
            raise ValueError(f"metadata value of {key!r} is not printable ASCII")
        headers.append((key.encode(), text.encode("ascii")))
    return headers


def encode_message(details: str) -> bytes:
    """`grpc-message`: UTF-8, percent-encoded outside printable ASCII."""
    return b"".join(
        bytes((byte,)) if byte in _PLAIN else b"%%%02X" % byte for byte in details.encode()
    )


def status_headers(code: grpc.StatusCode, details: str) -> list[Header]:
    status: int = code.value[0]
    headers = [(b"grpc-status", str(status).encode())]
    if details:
        headers.append((b"grpc-message", encode_message(details)))
    return headers
