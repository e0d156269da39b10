"""The gRPC server interceptor that enforces stopcock.manager.auth on every call.

A refused call gets a handler of the same kind as the method's (unary or
server-streaming, client-streaming) that aborts with the contract's error:
401 with `WWW-Authenticate: Bearer`, or 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
from stopcock.grpc_handlers import Handler, Interceptor, metadata_value, refusing
from stopcock.manager.api.servicer import abort_args
from stopcock.manager.auth.authenticator import Authenticator
from stopcock.manager.domain import errors


def _refusing_handler(handler: Handler, err: errors.ApiError) -> Handler:
    code, details, trailing = abort_args(err)
    if err.http_status == 401:
        trailing = (*trailing, ("www-authenticate", 'Bearer realm="stopcock"'))
    return refusing(handler, code, details, trailing)


class AuthInterceptor(Interceptor):
    def __init__(self, authenticator: Authenticator) -> None:
        self._auth = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # unknown method: gRPC answers UNIMPLEMENTED
        authorization = metadata_value(handler_call_details.invocation_metadata, "authorization")
        try:
            await self._auth.check(handler_call_details.method, authorization)
        except errors.ApiError as err:
            return _refusing_handler(handler, err)
        return handler
