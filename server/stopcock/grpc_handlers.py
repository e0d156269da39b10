"""gRPC server plumbing shared by the manager and the runtime.

grpc's handler and interceptor classes are generic only in their type
stubs, hence the aliases. `refusing` makes a handler that refuses a call
whatever the method's kind: an interceptor that refuses must answer with a
handler of the same kind as the method's (unary or server-streaming,
client-streaming), or gRPC reads the request wrongly. `metadata_value`
reads one key of a call's metadata, as interceptors do on every call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    Interceptor = grpc.aio.ServerInterceptor

Context = grpc.aio.ServicerContext[Any, Any]


def metadata_value(metadata: Sequence[tuple[str, str | bytes]] | None, key: str) -> str | None:
    """The text value of `key` in gRPC metadata (the last one, as a dict of it would keep).

    A scan of the few pairs a call carries, rather than a dict of them per call.
    """
    found: str | bytes | None = None
    for k, v in metadata or ():
        if k == key:
            found = v
    return found if isinstance(found, str) else None


def refusing(
    handler: Handler,
    code: grpc.StatusCode,
    details: str,
    trailing: Sequence[tuple[str, str | bytes]] = (),
) -> Handler:
    """A handler of the same kind as `handler` that aborts with `code`."""

    async def refuse(request: Any, context: Context) -> NoReturn:
        await context.abort(code, details, tuple(trailing))

    async def refuse_stream(request: Any, context: Context) -> AsyncIterator[Any]:
        await context.abort(code, details, tuple(trailing))
        yield  # unreachable; makes this an async generator like the handler

    kinds = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **kinds)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, **kinds)
    return grpc.unary_unary_rpc_method_handler(refuse, **kinds)
