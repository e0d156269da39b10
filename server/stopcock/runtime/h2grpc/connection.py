"""One HTTP/2 connection: h2's state machine between the socket and the calls' streams.

An asyncio protocol (buffered: reads land in one buffer per connection, not
a fresh 256 KiB bytes object per read): bytes in go through h2, whose events open streams
(each call a task, see call.py), feed them data, end or reset them; bytes
h2 wants out are written at once. h2 answers PINGs and SETTINGS itself.
Nothing here sets a timer: an idle connection costs nothing until bytes come.

Flow control. Each stream gives its window back as its handler consumes
(stream.py). The connection's window is given back as bytes arrive, as long
as the streams together hold at most HOLD_LIMIT: one stalled call must not
stall the others that share the connection (the manager multiplexes all its
calls to a runtime on one), yet the sum stays bounded.

A malformed frame is a connection error: h2 queues a GOAWAY, the connection
is closed, its calls cancelled; the server goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import socket
from typing import TYPE_CHECKING

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame
from stopcock import flow_control
from stopcock.runtime.h2grpc import frame_repr, wire
from stopcock.runtime.h2grpc.stream import Stream

if TYPE_CHECKING:
    from stopcock.runtime.h2grpc.server import Server

log = logging.getLogger("stopcock.runtime.h2grpc")
frame_repr.install()  # see there: h2 builds a repr of every frame it receives

STREAM_WINDOW = flow_control.WINDOW_BYTES
CONNECTION_WINDOW = flow_control.WINDOW_BYTES
HOLD_LIMIT = 4 * flow_control.WINDOW_BYTES
# Large frames: a 1 MiB ingest chunk in one DATA frame, not 64 of 16 KiB
# (h2's per-frame cost is Python code).
MAX_FRAME_SIZE = 1 << 20
MAX_CONCURRENT_STREAMS = 256
MAX_HEADER_LIST_SIZE = 64 << 10
# The transport's write buffer: a sender waits above it (stream.py).
WRITE_BUFFER_HIGH = 1 << 20
READ_BUFFER = 256 << 10  # as asyncio reads by default
DEFAULT_WINDOW = 65535  # RFC 9113's initial window, before SETTINGS


class Connection(asyncio.BufferedProtocol):
    def __init__(self, server: Server) -> None:
        self._server = server
        self.max_message = server.max_message
        self.stream_credit_batch = STREAM_WINDOW // 4
        # Headers pass as gRPC's C core passes them: h2's checks would make a
        # metadata value with a leading space (` 2`) a connection error, ending
        # every call on it; wire.py checks what we send, `_open` what a call needs.
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.transport: asyncio.Transport | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.peer = ""
        self.streams: dict[int, Stream] = {}
        self._held = 0  # bytes the streams hold (not given back to the peer)
        self._uncredited = 0  # bytes received, connection window not given back
        self.closing = False  # GOAWAY sent: no new calls
        self._frames = FrameSizeGuard()
        # Anonymous memory, not a bytearray (which zero-fills all of it): its
        # pages exist only as far as reads have filled it, a few KiB for a
        # connection that carries only control calls and pings.
        self._read_buffer = memoryview(mmap.mmap(-1, READ_BUFFER))

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        # Headers, messages and trailers go out as separate small writes:
        # with Nagle's algorithm each waits for the peer's delayed ACK (~40
        # ms a call). asyncio sets this only on sockets made with
        # IPPROTO_TCP, which an accepted one may not say it is.
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host, port, *_ = transport.get_extra_info("peername") or ("?", 0)
        self.peer = f"ipv4:{host}:{port}"
        self._server.connections.add(self)
        self.h2.initiate_connection()
        self.h2.update_settings(
            {
                SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
                SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
            }
        )
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - DEFAULT_WINDOW)
        self.flush()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        # h2 copies what it is given into its frame buffer: no copy here.
        self._received(self._read_buffer[:nbytes])

    def _received(self, data: memoryview) -> None:
        if not self._frames.accept(data):
            log.info(
                "closing a connection from %s: a frame over %d bytes", self.peer, MAX_FRAME_SIZE
            )
            with contextlib.suppress(h2.exceptions.H2Error):
                self.h2.close_connection(h2.errors.ErrorCodes.FRAME_SIZE_ERROR)
            self.flush()
            self._close()
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.info("closing a connection from %s: %s", self.peer, exc)
            self.flush()  # h2's GOAWAY
            self._close()
            return
        try:
            for event in events:
                self._dispatch(event)
        except Exception:  # a bug here must cost one connection, not the runtime
            log.exception("closing a connection from %s", self.peer)
            self._close(abort=True)
            return
        self._credit_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self.writable.set()
        for stream in list(self.streams.values()):
            stream.on_gone()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # -- used by streams and the server -----------------------------------------------

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def released(self, size: int) -> None:
        """A stream gave `size` bytes back: the connection may take more."""
        self._held -= size
        self._credit_connection()

    def call_done(self, stream: Stream) -> None:
        if self.streams.pop(stream.stream_id, None) is not None:
            self._held -= stream.release()
            self._credit_connection()
            self.flush()
        if self.closing and not self.streams:
            self._close()

    def shut_down(self) -> None:
        """Takes no new calls (GOAWAY); closes once the current ones are done."""
        if self.closing:
            return
        self.closing = True
        if not self.streams:
            self._close()
            return
        # Not h2's close_connection: that would end the calls still running.
        goaway = GoAwayFrame(0)
        goaway.last_stream_id = self.h2.highest_inbound_stream_id
        goaway.error_code = 0
        self.flush()
        if self.transport is not None:
            self.transport.write(goaway.serialize())

    # -- internals ----------------------------------------------------------------------

    def _close(self, abort: bool = False) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if not abort:
            # Raises if an error closed it already (its GOAWAY is out then).
            with contextlib.suppress(h2.exceptions.H2Error):
                self.h2.close_connection(last_stream_id=self.h2.highest_inbound_stream_id)
            self.flush()
            self.transport.close()
        else:
            self.transport.abort()
        for stream in list(self.streams.values()):
            stream.on_gone()

    def _credit_connection(self) -> None:
        if self._uncredited >= CONNECTION_WINDOW // 4 and self._held <= HOLD_LIMIT:
            credit, self._uncredited = self._uncredited, 0
            try:
                self.h2.increment_flow_control_window(credit)
            except h2.exceptions.H2Error:
                return  # the connection is closing
            self.flush()

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None and event.data is not None
            size = event.flow_controlled_length or 0
            self._uncredited += size
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                self._held += size
                stream.on_data(event.data, size)
        elif isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None and event.headers is not None
            self._open(event.stream_id, event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.on_end()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.on_gone()
        elif isinstance(event, h2.events.WindowUpdated):
            if not event.stream_id:
                for stream in self.streams.values():
                    stream.on_window_update()
            elif (stream := self.streams.get(event.stream_id)) is not None:
                stream.on_window_update()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                for stream in self.streams.values():
                    stream.on_window_update()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # The client's GOAWAY: h2 takes no more frames from us, so the
            # calls cannot be answered; they end as if it had hung up.
            self._close()

    def _open(self, stream_id: int, headers: list[wire.Header]) -> None:
        fields = dict(headers)
        if self.closing:
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        timeout = fields.get(b"grpc-timeout")
        seconds = wire.parse_timeout(timeout) if timeout is not None else None
        deadline = None if seconds is None else asyncio.get_running_loop().time() + seconds
        path = fields.get(b":path", b"").decode("latin-1")
        stream = Stream(self, stream_id, path, wire.invocation_metadata(headers), deadline)
        content_type = fields.get(b"content-type", b"")
        if fields.get(b":method") != b"POST" or not path.startswith("/"):
            stream.refuse_http(
                405, grpc.StatusCode.UNIMPLEMENTED, "a gRPC call is a POST to /service/method"
            )
            return
        if not (
            content_type == b"application/grpc" or content_type.startswith(b"application/grpc+")
        ):
            stream.refuse_http(
                415, grpc.StatusCode.INTERNAL, f"unsupported content-type {content_type!r}"
            )
            return
        if fields.get(b"grpc-encoding", b"identity") != b"identity":
            stream.finish(grpc.StatusCode.UNIMPLEMENTED, "compressed requests are not supported")
            return
        self.streams[stream_id] = stream
        self._server.start_call(stream)


class FrameSizeGuard:
    """Finds a frame announced larger than MAX_FRAME_SIZE as soon as its header arrives.

    h2 checks a frame's size only once all of it has arrived: a peer could
    make a connection buffer 16 MiB before it is refused. This follows the
    frame boundaries in the bytes received (after the client's preface).
    """

    def __init__(self) -> None:
        self._preface = 24  # bytes of "PRI * HTTP/2.0..." still to come
        self._header = b""  # a frame header received in part
        self._body = 0  # bytes of the current frame's payload still to come

    def accept(self, data: memoryview) -> bool:
        """False once a frame header announces an oversize frame."""
        position = min(self._preface, len(data))
        self._preface -= position
        end = len(data)
        while position < end:
            if self._body:
                step = min(self._body, end - position)
                self._body -= step
                position += step
                continue
            need = 9 - len(self._header)
            self._header += bytes(data[position : position + need])
            position += need
            if len(self._header) == 9:
                self._body = int.from_bytes(self._header[:3], "big")
                self._header = b""
                if self._body > MAX_FRAME_SIZE:
                    return False
        return True
