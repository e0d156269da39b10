"""Authentication and authorization rules, in one place.

Every call, native gRPC or REST through Envoy (which forwards the
`Authorization` header as metadata), is checked here by the API's
interceptor (stopcock.manager.api.auth_interceptor), so both faces behave
the same. The rules:

  * open: health checking, reflection, and CheckHealth (`GET /healthz`);
  * read: the calls that only read (below);
  * write: everything else, unknown methods included (deny by default).

A credential is `Authorization: Bearer <token>`: a token starting with
`apikey:` is an API key, anything else a JWT. Missing or bad credentials are
UNAUTHENTICATED / 401 AuthenticationFailed with `WWW-Authenticate: Bearer`;
a read credential on a write call is PERMISSION_DENIED / 403
InsufficientPermissions {required, actual}.

A JWT's role is its `stopcock_role` claim (configurable). A token without a
valid role is authenticated but may do nothing (403, actual "none"): a
missing claim usually means a misconfigured identity provider, and reading
pipelines (SQL programs, data) is not harmless enough to grant by default.

No credential is ever logged or echoed: refusals say why, never what.
"""

from __future__ import annotations

import logging

from stopcock.manager.auth.api_keys import PREFIX, ApiKeys
from stopcock.manager.auth.jwt import JwtVerifier, TokenRejected
from stopcock.manager.domain import errors

log = logging.getLogger("stopcock.auth")

SERVICE = "/stopcock.v1.PipelineService/"
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
OPEN_METHODS = frozenset({SERVICE + "CheckHealth", SERVICE + "GetOpenApi"})
READ_METHODS = frozenset(
    SERVICE + name
    for name in (
        "GetPipeline",
        "ListPipelines",
        "ListPipelinesJson",
        "GetCheckpointStatus",
        "QueryPipeline",
        "GetCompletionStatus",
        "GetConfig",
        "WatchPipeline",
        "GetPipelineLogs",
        # Role::Read in Feldera's rbac.rs, as GET /v0/config.
        "GetClusterHealth",
        # Role::Read in Feldera (GET /v0/pipelines/{name}/stats).
        "GetPipelineStats",
        # Role::Read in Feldera's rbac.rs (GET /v0/pipelines/{name}/events[/{event_id}]).
        "ListPipelineEvents",
        "GetPipelineEvent",
        # Stopcock's own: the web console's list stream, and who the caller is.
        "WatchPipelines",
        "GetCaller",
    )
)
ROLES = ("read", "write")


def required_role(method: str) -> str | None:
    """None for open methods, else the role a credential needs."""
    if method in OPEN_METHODS or method.startswith(OPEN_PREFIXES):
        return None
    return "read" if method in READ_METHODS else "write"


def authentication_failed(reason: str) -> errors.ApiError:
    return errors.ApiError(
        401,
        "AuthenticationFailed",
        f"Authentication failed: {reason}",
        {"reason": reason},
        "UNAUTHENTICATED",
    )


def insufficient_permissions(required: str, actual: str) -> errors.ApiError:
    return errors.ApiError(
        403,
        "InsufficientPermissions",
        f"This call needs a '{required}' credential; this one is '{actual}'",
        {"required": required, "actual": actual},
        "PERMISSION_DENIED",
    )


class Authenticator:
    def __init__(self, api_keys: ApiKeys, jwt_verifier: JwtVerifier) -> None:
        self._keys = api_keys
        self._jwt = jwt_verifier

    async def role_of(self, authorization: str | None) -> str:
        """The credential's role ("read", "write" or "none"), or an ApiError 401."""
        if not authorization:
            raise authentication_failed("no credential: send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise authentication_failed("the Authorization scheme must be Bearer")
        token = token.strip()
        if not token:
            raise authentication_failed("the bearer token is empty")
        if token.startswith(PREFIX):
            record = await self._keys.verify(token)
            if record is None:
                raise authentication_failed("the API key is not valid")
            return record.role
        try:
            verified = await self._jwt.verify(token)
        except TokenRejected as exc:
            raise authentication_failed(str(exc)) from None
        return verified.role if verified.role in ROLES else "none"

    async def check(self, method: str, authorization: str | None) -> None:
        required = required_role(method)
        if required is None:
            return
        actual = await self.role_of(authorization)
        if actual in ("write", required):
            return
        raise insufficient_permissions(required, actual)
