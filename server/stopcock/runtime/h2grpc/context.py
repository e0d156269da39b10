"""The handler's side of a call: grpc.aio's ServicerContext, over our stream.

Handlers written for grpc.aio (runtime/service.py, stopcock.grpc_handlers)
run unchanged: `abort` records the status and raises grpc.aio.AbortError,
which the call (call.py) turns into the trailers.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

import grpc
import grpc.aio
from stopcock.runtime.h2grpc import wire
from stopcock.runtime.h2grpc.stream import Stream

Deserializer = Callable[[bytes], Any]
Serializer = Callable[[Any], bytes]


def _identity(value: Any) -> Any:
    return value


class CallDetails(grpc.HandlerCallDetails):
    """What interceptors see: the method's path and the caller's metadata."""

    def __init__(self, method: str, invocation_metadata: wire.Metadata) -> None:
        self.method = method
        self.invocation_metadata = invocation_metadata


class Context(grpc.aio.ServicerContext[Any, Any]):
    def __init__(
        self,
        stream: Stream,
        deserializer: Deserializer | None,
        serializer: Serializer | None,
    ) -> None:
        self._stream = stream
        self.deserialize: Deserializer = deserializer or _identity
        self.serialize: Serializer = serializer or _identity
        self.status_code: grpc.StatusCode | None = None
        self.status_details = ""
        self.trailing: Sequence[tuple[str, Any]] = ()
        self._done = False
        self._callbacks: list[Callable[[Any], None]] = []

    # -- status ---------------------------------------------------------------------

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Any = (),  # (key, value) pairs, or a grpc.aio.Metadata
    ) -> NoReturn:
        if code == grpc.StatusCode.OK:
            raise ValueError("abort() needs a status other than OK")
        self.status_code = code
        self.status_details = details
        if trailing_metadata:  # as grpc.aio: else what set_trailing_metadata set
            self.trailing = tuple(trailing_metadata)
        raise grpc.aio.AbortError()

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.status_code = code

    def set_details(self, details: str) -> None:
        self.status_details = details

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self.trailing = tuple(trailing_metadata)

    def code(self) -> grpc.StatusCode:
        return self.status_code or grpc.StatusCode.OK

    def details(self) -> str:
        return self.status_details

    def trailing_metadata(self) -> Any:
        return tuple(self.trailing)

    # -- messages -------------------------------------------------------------------

    async def read(self) -> Any:
        message = await self._stream.read_message()
        eof: object = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
        return eof if message is None else self.deserialize(message)

    async def write(self, message: Any) -> None:
        await self._stream.send_message(self.serialize(message))

    async def send_initial_metadata(self, initial_metadata: Any) -> None:
        self._stream.send_initial_metadata(initial_metadata)

    # -- about the call -----------------------------------------------------------------

    def invocation_metadata(self) -> Any:
        # (key, value) pairs, as grpc.aio gives them (grpc-stubs says Metadata).
        return self._stream.metadata

    def peer(self) -> str:
        return self._stream.connection.peer

    def peer_identities(self) -> Iterable[bytes] | None:
        return None  # plaintext only

    def peer_identity_key(self) -> str | None:
        return None

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return {}

    def time_remaining(self) -> float:
        deadline = self._stream.deadline
        if deadline is None:
            return math.inf
        return max(0.0, deadline - asyncio.get_running_loop().time())

    def set_compression(self, compression: grpc.Compression) -> None:
        pass  # we never compress

    def disable_next_message_compression(self) -> None:
        pass

    def cancelled(self) -> bool:
        return self._stream.gone or self._stream.cancel_status is not None

    def done(self) -> bool:
        return self._done

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._done:
            callback(self)
        else:
            self._callbacks.append(callback)

    def mark_done(self) -> None:
        self._done = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)
