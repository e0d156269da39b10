"""The error trailer: how a refusal travels between the runtime, the manager,
Envoy and clients, written and read here only.

A refusal is a gRPC status plus two trailers: `x-http-status` (the REST
status) and `x-stopcock-error` (the contract's JSON error body
{message, error_code, details}, ASCII-only so that it is valid metadata).
Envoy's Lua filter turns them into the REST answer; the manager passes a
runtime's refusal on unchanged; clients decode it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ERROR_TRAILER = "x-stopcock-error"
STATUS_TRAILER = "x-http-status"


@dataclass(frozen=True, slots=True)
class ErrorBody:
    http_status: int
    error_code: str
    message: str
    details: Any  # a JSON object, or None

    def json(self) -> dict[str, Any]:
        return {"message": self.message, "error_code": self.error_code, "details": self.details}


def encode(body: ErrorBody) -> tuple[tuple[str, str], tuple[str, str]]:
    """The two trailers carrying `body`."""
    text = json.dumps(body.json(), ensure_ascii=True, separators=(", ", ": "))
    return (STATUS_TRAILER, str(body.http_status)), (ERROR_TRAILER, text)


def decode(
    metadata: Iterable[tuple[str, str | bytes]] | None, default_status: int = 500
) -> ErrorBody | None:
    """The error body in a call's trailing metadata; None when there is none (or it is bad)."""
    trailers = dict(metadata or ())
    raw = trailers.get(ERROR_TRAILER)
    if raw is None:
        return None
    try:
        parsed = json.loads(raw)
        status = int(trailers.get(STATUS_TRAILER, default_status))
        return ErrorBody(
            status, str(parsed["error_code"]), str(parsed["message"]), parsed["details"]
        )
    except (ValueError, KeyError, TypeError):
        return None
