"""One call, start to status: find its handler (through the interceptors), run it, answer.

The handler's kind decides how messages flow: a unary request is read whole
before the handler runs; a streamed one is an async iterator that reads as
the handler asks (which is what paces the sender, stream.py). A streamed
response is an async generator whose items are sent as they come, each send
waiting for the peer's window; the generator is closed whatever happens, so
its `finally` runs (a query stops reading SQLite).

The call's task is cancelled when the peer resets the stream or hangs up
(then nobody hears the end), or with a status to send: the deadline
(`grpc-timeout`), a request message over the limit, a shutdown whose grace
ran out.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from stopcock.runtime.h2grpc.context import CallDetails, Context
from stopcock.runtime.h2grpc.stream import CallFailed, Stream, StreamGone

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler

log = logging.getLogger("stopcock.runtime.h2grpc")

FindHandler = Callable[[CallDetails], Awaitable[Handler | None]]


async def serve(stream: Stream, find_handler: FindHandler) -> None:
    """Runs the call on `stream` to its end; never raises (the task is ours)."""
    context: Context | None = None
    deadline = None
    if stream.deadline is not None:
        deadline = asyncio.get_running_loop().call_at(
            stream.deadline, stream.cancel, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"
        )
    try:
        handler = await find_handler(CallDetails(stream.method, stream.metadata))
        if handler is None:
            stream.finish(grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {stream.method}")
            return
        context = Context(stream, handler.request_deserializer, handler.response_serializer)
        await _run(handler, stream, context)
        stream.finish(context.code(), context.status_details, context.trailing)
    except grpc.aio.AbortError:
        assert context is not None
        stream.finish(context.code(), context.status_details, context.trailing)
    except CallFailed as exc:
        stream.finish(exc.code, exc.details)
    except StreamGone:
        pass
    except asyncio.CancelledError:
        # Only the stream cancels this task: the peer went away (nothing to
        # say) or we end the call with a status. Not re-raised: the task ends.
        if stream.cancel_status is not None:
            stream.finish(*stream.cancel_status)
    except Exception as exc:
        log.exception("call %s failed", stream.method)
        stream.finish(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc).__name__}: {exc}")
    finally:
        if deadline is not None:
            deadline.cancel()
        if context is not None:
            context.mark_done()


async def _run(handler: Handler, stream: Stream, context: Context) -> None:
    request: Any
    if handler.request_streaming:
        request = _requests(stream, context)
    else:
        request = _parse(context, await _only_message(stream))
    if handler.response_streaming:
        streaming: Any = handler.unary_stream or handler.stream_stream
        responses: Any = streaming(request, context)
        if inspect.isasyncgen(responses):
            try:
                async for response in responses:
                    await stream.send_message(_serialize(context, response))
            finally:
                await responses.aclose()
        else:  # a coroutine that writes with context.write()
            await responses
        return
    unary: Any = handler.unary_unary or handler.stream_unary
    response = unary(request, context)
    if inspect.isawaitable(response):
        response = await response
    if context.code() == grpc.StatusCode.OK:
        if response is None:
            raise CallFailed(grpc.StatusCode.INTERNAL, "the handler returned no response")
        await stream.send_message(_serialize(context, response))


async def _only_message(stream: Stream) -> bytes:
    message = await stream.read_message()
    if message is None:
        raise CallFailed(grpc.StatusCode.INTERNAL, "a unary call needs one request message")
    if await stream.read_message() is not None:
        raise CallFailed(grpc.StatusCode.INTERNAL, "a unary call takes one request message")
    return message


async def _requests(stream: Stream, context: Context) -> AsyncIterator[Any]:
    while (message := await stream.read_message()) is not None:
        yield _parse(context, message)


def _parse(context: Context, message: bytes) -> Any:
    try:
        return context.deserialize(message)
    except Exception as exc:
        raise CallFailed(grpc.StatusCode.INTERNAL, "Exception deserializing request!") from exc


def _serialize(context: Context, response: Any) -> bytes:
    try:
        data = context.serialize(response)
    except Exception as exc:
        raise CallFailed(grpc.StatusCode.INTERNAL, "Exception serializing response!") from exc
    if not isinstance(data, bytes):
        raise CallFailed(grpc.StatusCode.INTERNAL, "a response must serialize to bytes")
    return data
