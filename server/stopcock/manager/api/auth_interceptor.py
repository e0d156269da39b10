"""The gRPC server interceptor that enforces stopcock.manager.auth on every call.

A refused call gets a handler of the same kind as the method's (unary or
server-streaming, client-streaming) that aborts with the contract's error:
401 with `WWW-Authenticate: Bearer`, or 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from stopcock.manager.api.servicer import abort_args
from stopcock.manager.auth.authenticator import Authenticator
from stopcock.manager.domain import errors

if TYPE_CHECKING:  # grpc's classes are generic only in the type stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    _Interceptor = grpc.aio.ServerInterceptor


def _refusing_handler(handler: Handler, err: errors.ApiError) -> Handler:
    code, details, trailing = abort_args(err)
    if err.http_status == 401:
        trailing = (*trailing, ("www-authenticate", 'Bearer realm="stopcock"'))

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, details, trailing)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, details, trailing)
        yield  # unreachable; makes this an async generator like the handler

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            refuse_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class AuthInterceptor(_Interceptor):
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
        metadata = dict(handler_call_details.invocation_metadata or ())
        authorization = metadata.get("authorization")
        try:
            await self._auth.check(
                handler_call_details.method,
                authorization if isinstance(authorization, str) else None,
            )
        except errors.ApiError as err:
            return _refusing_handler(handler, err)
        return handler
