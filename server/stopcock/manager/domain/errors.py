"""Domain errors: every refusal the API can give, in the contract's terms.

An `ApiError` carries everything both faces need: the REST status and body
(`{"message", "error_code", "details"}`) and the gRPC status code. The core
raises them; the servicer turns them into a gRPC abort whose metadata lets
Envoy rebuild the exact REST answer. This module has no gRPC import: the
grpc code is a plain name here ("NOT_FOUND") and mapped in the API layer.
"""

from __future__ import annotations

from typing import Any

JsonObject = dict[str, Any]


class ApiError(Exception):
    """A refusal with its REST status, error code, details and gRPC code."""

    def __init__(
        self,
        http_status: int,
        error_code: str,
        message: str,
        details: JsonObject | None,
        grpc_code: str,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.error_code = error_code
        self.message = message
        self.details = details
        self.grpc_code = grpc_code

    def body(self) -> JsonObject:
        return {"message": self.message, "error_code": self.error_code, "details": self.details}


def unknown_pipeline(name: str) -> ApiError:
    return ApiError(
        404,
        "UnknownPipelineName",
        f"Unknown pipeline name '{name}'",
        {"pipeline_name": name},
        "NOT_FOUND",
    )


def duplicate_name(name: str, what: str = "pipeline") -> ApiError:
    return ApiError(
        409,
        "DuplicateName",
        f"An {what} named '{name}' already exists"
        if what[0] in "aeiou"
        else f"A {what} named '{name}' already exists",
        None,
        "ALREADY_EXISTS",
    )


def bad_request(error_code: str, message: str, details: JsonObject | None = None) -> ApiError:
    """A 400 refusal of the request itself (bad input)."""
    return ApiError(400, error_code, message, details, "INVALID_ARGUMENT")


def precondition(error_code: str, message: str, details: JsonObject | None = None) -> ApiError:
    """A 400 refusal because of the pipeline's current state."""
    return ApiError(400, error_code, message, details, "FAILED_PRECONDITION")


def illegal_action(status: str, current_desired: str, new_desired: str, hint: str) -> ApiError:
    return precondition(
        "IllegalPipelineAction",
        f"Deployment resources status (current: '{status}', desired: '{current_desired}') "
        f"cannot have desired changed to '{new_desired}'. {hint}",
        {
            "status": status,
            "current_desired_status": current_desired,
            "new_desired_status": new_desired,
            "hint": hint,
        },
    )


def invalid_transition(from_status: str, to_status: str, reason: str) -> ApiError:
    return precondition(
        "InvalidTransition",
        f"The runtime cannot go from '{from_status}' to '{to_status}': {reason}",
        {"from": from_status, "to": to_status},
    )


def unsupported_action(action: str, reason: str) -> ApiError:
    return ApiError(
        405,
        "UnsupportedPipelineAction",
        f"Action '{action}' is not supported: {reason}",
        {"action": action, "reason": reason},
        "UNIMPLEMENTED",
    )


def not_deployed(name: str, status: str, desired_status: str) -> ApiError:
    return ApiError(
        503,
        "PipelineInteractionNotDeployed",
        f"Pipeline '{name}' is not deployed (status: '{status}', "
        f"desired status: '{desired_status}')",
        {"pipeline_name": name, "status": status, "desired_status": desired_status},
        "UNAVAILABLE",
    )


def unreachable(name: str, request: str, error: str) -> ApiError:
    return ApiError(
        503,
        "PipelineInteractionUnreachable",
        f"The runtime of pipeline '{name}' cannot be reached: {error}",
        {"pipeline_name": name, "request": request, "error": error},
        "UNAVAILABLE",
    )


def database_unavailable() -> ApiError:
    """The database did not answer (PostgreSQL restarting, a network cut): retry later."""
    return ApiError(
        503,
        "DatabaseUnavailable",
        "The manager's database cannot be reached right now; retry shortly",
        {},
        "UNAVAILABLE",
    )


def internal() -> ApiError:
    """What a client sees of an unexpected failure: no stack trace, no detail."""
    return ApiError(500, "InternalError", "An internal error occurred", {}, "INTERNAL")


def response_too_large(limit_bytes: int) -> ApiError:
    """An answer over the REST face's limit: the body Envoy gives it too (envoy.yaml)."""
    return ApiError(
        500,
        "ResponseTooLarge",
        f"The answer is larger than the REST API's limit of {limit_bytes} bytes; ask for less"
        " (GET /v0/pipelines?selector=status leaves the programs out)",
        {"limit_bytes": limit_bytes},
        "RESOURCE_EXHAUSTED",
    )
