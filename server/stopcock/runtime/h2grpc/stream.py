"""One call's HTTP/2 stream: its messages in, with flow control, and out, with backpressure.

Receiving. The peer may send only as far as the stream's window; the window
is given back (WINDOW_UPDATE) for the bytes of a message once the handler
takes it, not when it arrives, so a slow handler slows its sender and holds
at most a window of messages (per stream; the connection bounds the sum,
see connection.py). While the handler waits for a message, the bytes of the
one still arriving are given back at once: a message larger than the window
could not arrive otherwise.

Sending. A message goes out as far as the peer's windows (stream and
connection) and the transport's write buffer allow; `send_message` waits for
a WINDOW_UPDATE (or the buffer to drain) and so a reader that does not read
holds up the handler that writes, which is what makes a query as slow as its
reader (runtime/queries.py).

Everything here runs on the event loop; the connection feeds the `on_*`
methods from its h2 events, the call's task uses the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from h2.connection import H2Connection
from h2.exceptions import H2Error
from stopcock.runtime.h2grpc import wire

if TYPE_CHECKING:
    from stopcock.runtime.h2grpc.connection import Connection

_GRPC_HEADERS: list[wire.Header] = [(b":status", b"200"), (b"content-type", b"application/grpc")]


class StreamGone(Exception):
    """The peer reset the stream or the connection is gone: nothing more can be sent."""


class CallFailed(Exception):
    """Ends the call with this status (a malformed request, a message over the limit...)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Stream:
    def __init__(
        self,
        connection: Connection,
        stream_id: int,
        method: str,
        metadata: wire.Metadata,
        deadline: float | None,
    ) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.method = method
        self.metadata = metadata
        self.deadline = deadline  # loop time, or None
        self.task: asyncio.Task[None] | None = None
        # Why the call's task was cancelled, if the peer should hear it
        # (deadline, message over the limit, shutdown); None: it went away.
        self.cancel_status: tuple[grpc.StatusCode, str] | None = None
        self.remote_ended = False  # END_STREAM received: no more messages
        self.local_ended = False  # our END_STREAM (the status) sent
        self.gone = False  # reset by the peer, or the connection is lost
        self.headers_sent = False
        self.sending_blocked = False  # waiting for the peer's window or the transport
        # Receiving: bytes of incomplete messages, complete ones not taken yet.
        self._buffer = bytearray()
        self._messages: deque[bytes] = deque()
        self._queued_bytes = 0  # wire bytes of `_messages`
        self.held = 0  # flow-controlled bytes received and not given back yet
        self._unsent_credit = 0  # given back, not yet announced (batched)
        self._reader_waiting = False
        self._arrived = asyncio.Event()
        self._window_opened = asyncio.Event()

    # -- fed by the connection ----------------------------------------------------

    def on_data(self, data: bytes, flow_controlled: int) -> None:
        self.held += flow_controlled
        if self.cancel_status is not None:
            self._give_back()  # a failed call reads nothing more
            return
        self._buffer += data
        limit = self.connection.max_message
        while len(self._buffer) >= wire.PREFIX:
            compressed, length = wire.MESSAGE_HEADER.unpack_from(self._buffer)
            if compressed:
                # We announce no grpc-accept-encoding: a client never compresses.
                self._fail(grpc.StatusCode.UNIMPLEMENTED, "compressed messages are not supported")
                return
            if length > limit:
                self._fail(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"Received message larger than max ({length} vs. {limit})",
                )
                return
            end = wire.PREFIX + length
            if len(self._buffer) < end:
                break
            self._messages.append(bytes(memoryview(self._buffer)[wire.PREFIX : end]))
            del self._buffer[:end]
            self._queued_bytes += end
        if self._messages:
            self._arrived.set()
        self._give_back()

    def on_end(self) -> None:
        self.remote_ended = True
        if self._buffer and self.cancel_status is None:
            self._fail(grpc.StatusCode.INTERNAL, "the request ended inside a message")
        self._arrived.set()

    def on_window_update(self) -> None:
        self._window_opened.set()

    def on_gone(self) -> None:
        """The peer reset the stream or the connection is lost: the call ends unheard."""
        self.gone = True
        if self.task is not None:
            self.task.cancel()

    def cancel(self, code: grpc.StatusCode, details: str) -> None:
        """Cancels the call's task; the peer gets this status (deadline, shutdown)."""
        if self.cancel_status is None and not self.local_ended:
            self.cancel_status = (code, details)
            if self.task is not None:
                self.task.cancel()

    def _fail(self, code: grpc.StatusCode, details: str) -> None:
        self._buffer.clear()
        self._messages.clear()
        self._queued_bytes = 0
        self.cancel(code, details)
        self._give_back()

    # -- used by the call ---------------------------------------------------------

    async def read_message(self) -> bytes | None:
        """The next request message; None once the client has sent all of them."""
        while not self._messages:
            if self.remote_ended:
                return None
            self._arrived.clear()
            self._reader_waiting = True
            self._give_back()  # what is buffered is part of the message awaited
            try:
                await self._arrived.wait()
            finally:
                self._reader_waiting = False
        message = self._messages.popleft()
        self._queued_bytes -= wire.PREFIX + len(message)
        self._give_back()
        return message

    def send_initial_metadata(self, metadata: Sequence[tuple[str, Any]] | None = None) -> None:
        if self.headers_sent:
            return
        headers = _GRPC_HEADERS + wire.metadata_headers(metadata)
        with self._sending() as h2:
            h2.send_headers(self.stream_id, headers)
        self.headers_sent = True

    async def send_message(self, payload: bytes) -> None:
        limit = self.connection.max_message
        if len(payload) > limit:
            raise CallFailed(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"Sent message larger than max ({len(payload)} vs. {limit})",
            )
        self.send_initial_metadata()
        data = memoryview(wire.frame(payload))
        connection = self.connection
        h2 = connection.h2
        waited = False
        while data:
            if self.gone:
                raise StreamGone
            if not connection.writable.is_set():
                self.sending_blocked = waited = True
                await connection.writable.wait()
                continue
            try:
                window = min(
                    h2.local_flow_control_window(self.stream_id), h2.max_outbound_frame_size
                )
            except H2Error as exc:
                raise StreamGone from exc
            if window <= 0:
                self.sending_blocked = waited = True
                self._window_opened.clear()
                await self._window_opened.wait()
                continue
            self.sending_blocked = False
            with self._sending() as h2:
                h2.send_data(self.stream_id, data[:window])
            data = data[window:]
        self.sending_blocked = False
        if not waited:
            # Let the loop run (a reset, other calls) even when a handler
            # yields messages faster than the socket takes them, as each
            # write of grpc.aio does.
            await asyncio.sleep(0)

    def finish(
        self, code: grpc.StatusCode, details: str, trailing: Sequence[tuple[str, Any]] = ()
    ) -> None:
        """Sends the status and trailing metadata (Trailers-Only if nothing was sent yet)."""
        if self.gone or self.local_ended:
            return
        try:
            custom = wire.metadata_headers(trailing)
        except ValueError as exc:
            code, details, custom = grpc.StatusCode.INTERNAL, f"bad trailing metadata: {exc}", []
        headers = wire.status_headers(code, details) + custom
        if not self.headers_sent:
            headers = _GRPC_HEADERS + headers
        self.local_ended = True
        # The answer is complete: a client still sending is told to stop (as
        # gRPC servers do); what it sent meanwhile is discarded.
        self._end_with(headers)

    def refuse_http(self, status: int, code: grpc.StatusCode, details: str) -> None:
        """Answers a request that is not gRPC (wrong method or content-type) in plain HTTP."""
        headers = [(b":status", str(status).encode()), *wire.status_headers(code, details)]
        self.local_ended = True
        self._end_with(headers)

    def release(self) -> int:
        """Drops what is buffered once the call is over; returns the bytes it held."""
        held, self.held = self.held, 0
        self._buffer.clear()
        self._messages.clear()
        self._queued_bytes = 0
        return held

    # -- internals ----------------------------------------------------------------

    @contextlib.contextmanager
    def _sending(self) -> Iterator[H2Connection]:
        """The h2 connection to send with; StreamGone if the stream closed; flushes after."""
        if self.gone:
            raise StreamGone
        try:
            yield self.connection.h2
        except H2Error as exc:  # the stream or the connection closed under us
            raise StreamGone from exc
        self.connection.flush()

    def _end_with(self, headers: list[wire.Header]) -> None:
        with contextlib.suppress(StreamGone), self._sending() as h2:
            h2.send_headers(self.stream_id, headers, end_stream=True)
            if not self.remote_ended:
                h2.reset_stream(self.stream_id, 0)

    def _give_back(self) -> None:
        """Returns window for what is neither queued nor (unless awaited) arriving."""
        keep = self._queued_bytes + (0 if self._reader_waiting else len(self._buffer))
        freed = self.held - keep
        if freed <= 0:
            return
        self.held = keep
        self.connection.released(freed)
        self._unsent_credit += freed
        # Batched: the peer still has 3/4 of the window while a quarter waits,
        # and a full window (the peer blocked) always exceeds the batch.
        if self._unsent_credit >= self.connection.stream_credit_batch and not (
            self.remote_ended or self.local_ended or self.gone
        ):
            credit, self._unsent_credit = self._unsent_credit, 0
            with contextlib.suppress(StreamGone), self._sending() as h2:
                h2.increment_flow_control_window(credit, stream_id=self.stream_id)
