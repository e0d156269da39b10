"""A gRPC server in pure Python, on asyncio and h2, shaped like grpc.aio's.

Why not grpc.aio.server: gRPC's C core keeps threads of its own (an event
engine's pollers, timers, a work-stealing pool whose lifeguard wakes every
second) that wake several times a second even with no call at all, and a
private heap per process. A runtime process is one per pipeline and mostly
idle: with hundreds of them, that idle cost adds up. This server has no
thread and no timer: an idle runtime sleeps in epoll_wait until a byte comes.

It takes the generated registration as is
(`add_RuntimeServiceServicer_to_server(servicer, server)`) and grpc.aio
interceptors; handlers get a grpc.aio-style context (context.py). Plaintext
HTTP/2 only (the runtime listens on 127.0.0.1); no compression.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from stopcock.runtime.h2grpc import call
from stopcock.runtime.h2grpc.call import Handler
from stopcock.runtime.h2grpc.connection import Connection
from stopcock.runtime.h2grpc.context import CallDetails
from stopcock.runtime.h2grpc.stream import Stream

if TYPE_CHECKING:
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
    GenericHandler = grpc.GenericRpcHandler[Any, Any]
else:
    Interceptor = grpc.aio.ServerInterceptor
    GenericHandler = grpc.GenericRpcHandler

MAX_MESSAGE = 256 << 20  # bytes, each way (as grpc.max_{send,receive}_message_length)
SHUTDOWN_DETAILS = "the server is shutting down"


class Server(grpc.aio.Server):
    def __init__(
        self, interceptors: Sequence[Interceptor] = (), max_message: int = MAX_MESSAGE
    ) -> None:
        self.max_message = max_message
        self.connections: set[Connection] = set()
        self._interceptors = tuple(interceptors)
        self._methods: dict[str, Handler] = {}
        self._generic: list[GenericHandler] = []
        self._sockets: list[socket.socket] = []
        self._listeners: list[asyncio.Server] = []
        self._calls: dict[asyncio.Task[None], Stream] = {}
        self._stopped = asyncio.Event()

    # -- registration (what generated code and grpc.aio's callers use) ------------------

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[GenericHandler]) -> None:
        self._generic.extend(generic_rpc_handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, Handler]
    ) -> None:
        for name, handler in method_handlers.items():
            self._methods[f"/{service_name}/{name}"] = handler

    def add_insecure_port(self, address: str) -> int:
        """Binds `address` (host:port, port 0 for any) now; calls are taken from `start`."""
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sockets.append(sock)
        bound: int = sock.getsockname()[1]
        return bound

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        # grpc.aio.Server declares it abstract; TLS is of no use on loopback
        # behind the per-deployment secret, and nobody calls this.
        raise NotImplementedError("plaintext only: the runtime listens on 127.0.0.1")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            listener = await loop.create_server(lambda: Connection(self), sock=sock)
            self._listeners.append(listener)

    async def stop(self, grace: float | None = None) -> None:
        """Takes no new calls; lets the running ones end within `grace` seconds, then ends them."""
        for listener in self._listeners:
            listener.close()
        for connection in list(self.connections):
            connection.shut_down()
        if self._calls and grace:
            await asyncio.wait(set(self._calls), timeout=grace)
        for stream in list(self._calls.values()):
            stream.cancel(grpc.StatusCode.UNAVAILABLE, SHUTDOWN_DETAILS)
        if self._calls:
            # Each ends once cancelled (its handler's cleanup aside); each
            # connection closes with its last call.
            await asyncio.wait(set(self._calls))
        for listener in self._listeners:
            await listener.wait_closed()
        self._stopped.set()

    async def wait_for_termination(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (grpc.aio's signature)
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- calls ----------------------------------------------------------------------------

    def start_call(self, stream: Stream) -> None:
        task = asyncio.get_running_loop().create_task(call.serve(stream, self._find_handler))
        stream.task = task
        self._calls[task] = stream
        task.add_done_callback(self._call_done)

    def _call_done(self, task: asyncio.Task[None]) -> None:
        stream = self._calls.pop(task, None)
        if stream is not None:
            stream.connection.call_done(stream)

    async def _find_handler(self, details: CallDetails) -> Handler | None:
        continuation: Callable[[Any], Awaitable[Handler | None]] = self._lookup
        for interceptor in reversed(self._interceptors):
            continuation = _chain(interceptor, continuation)
        return await continuation(details)

    async def _lookup(self, details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self._methods.get(details.method)
        if handler is not None:
            return handler
        for generic in self._generic:
            handler = generic.service(details)
            if handler is not None:
                return handler
        return None


def _chain(
    interceptor: Interceptor, continuation: Callable[[Any], Awaitable[Handler | None]]
) -> Callable[[Any], Awaitable[Handler | None]]:
    async def intercepted(details: grpc.HandlerCallDetails) -> Handler | None:
        handler: Handler | None = await interceptor.intercept_service(continuation, details)  # type: ignore[arg-type]
        return handler

    return intercepted
