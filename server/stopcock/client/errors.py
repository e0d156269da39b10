"""The client's exceptions: every failure is a `StopcockError` with the contract's fields.

The manager sends the exact REST error body in the `x-stopcock-error`
trailer of every failed call (and the REST status in `x-http-status`), so a
gRPC caller gets the same `error_code`, `message` and `details` as a REST
caller. A failure that never reached the manager (nothing listening, a
deadline passed) has no such trailer: its error code is derived from the
gRPC status instead, and an unreachable manager says so in words, since
"UNAVAILABLE: failed to connect to all addresses" is what a user sees
otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from stopcock.contract import error_codec

if TYPE_CHECKING:
    from stopcock.client.models import Pipeline

# The REST status a gRPC code stands for, when the server sent none.
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNIMPLEMENTED: 405,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class StopcockError(Exception):
    """A refused or failed call: `error_code` is the contract's (e.g. UnknownPipelineName).

    `http_status` is the REST status of the same refusal (None for failures
    found by the client itself, such as a wait that timed out); `grpc_code`
    the gRPC status name (None likewise).
    """

    def __init__(
        self,
        message: str,
        error_code: str,
        http_status: int | None = None,
        details: Any = None,
        grpc_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code
        self.http_status = http_status
        self.details = details
        self.grpc_code = grpc_code

    def __str__(self) -> str:
        return f"{self.message} ({self.error_code})"


class PipelineFailed(StopcockError):
    """A wait ended because the pipeline stopped with a `deployment_error`.

    The error code, message and details are the deployment error's (e.g.
    SuspendFailed); `pipeline` is the pipeline as it ended.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        error = pipeline.deployment_error or {}
        super().__init__(
            f"pipeline '{pipeline.name}' stopped with an error: {error.get('message', '?')}",
            str(error.get("error_code", "DeploymentError")),
            details=error.get("details"),
        )
        self.pipeline = pipeline


class CheckpointFailed(StopcockError):
    """The checkpoint waited for failed; `details` is the runtime's failure report."""


class WaitTimeout(StopcockError):
    """A wait did not see what it waited for in time; `pipeline` is the last state seen."""

    def __init__(self, message: str, pipeline: Pipeline | None = None) -> None:
        super().__init__(message, "WaitTimeout")
        self.pipeline = pipeline


def _pascal(code: grpc.StatusCode) -> str:
    return "".join(word.capitalize() for word in code.name.split("_"))


def from_rpc_error(exc: grpc.RpcError, address: str) -> StopcockError:
    """The StopcockError a failed call stands for (see the module doc)."""
    code = exc.code()
    # (key, value) pairs in both grpc and grpc.aio, whatever grpc-stubs says.
    pairs: Any = exc.trailing_metadata()
    body = error_codec.decode(pairs, _HTTP_STATUS.get(code, 500))
    if body is not None:
        return StopcockError(
            body.message, body.error_code, body.http_status, body.details, code.name
        )
    # Not the shape we know: fall back to the gRPC status below.
    details = exc.details() or code.name
    if code == grpc.StatusCode.UNAVAILABLE:
        reason = details.rsplit(": ", 1)[-1]
        return StopcockError(
            f"cannot reach the manager at {address}: {reason}",
            "ManagerUnavailable",
            503,
            {"address": address},
            code.name,
        )
    return StopcockError(details, _pascal(code), _HTTP_STATUS.get(code, 500), None, code.name)
