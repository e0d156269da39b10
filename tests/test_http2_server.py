"""The runtime's gRPC server (stopcock.runtime.h2grpc), against a real grpcio client.

Real sockets on 127.0.0.1, a grpc.aio client (what the manager uses), and a
small servicer on the runtime's own service definition. Waits are bounded
polls on the server's state, never sleeps that assume a speed.

The last test starts a stack and checks that an idle runtime process wakes
no thread at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import h2.config
import h2.connection
import h2.events
import pytest
from hyperframe.frame import DataFrame, Frame
from stopcock import flow_control
from stopcock.contract import error_codec
from stopcock.internal.v1 import runtime_service_pb2 as pb
from stopcock.internal.v1 import runtime_service_pb2_grpc as pb_grpc
from stopcock.runtime.h2grpc import Server, frame_repr
from stopcock.runtime.h2grpc.connection import MAX_FRAME_SIZE, STREAM_WINDOW, FrameSizeGuard
from stopcock.runtime.h2grpc.stream import Stream
from stopcock.runtime.service import TokenCheck

from tests.support import Stack

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]
MiB = 1 << 20
TOKEN = "the-secret"
AUTH = (("x-stopcock-runtime-token", TOKEN),)
CLIENT_OPTIONS = [
    ("grpc.max_receive_message_length", 256 * MiB),
    ("grpc.max_send_message_length", 256 * MiB),
    *flow_control.OPTIONS,
]
BOUND = 30.0  # seconds: a bound on waits for what takes milliseconds


async def until(check: Callable[[], T | None], what: str) -> T:
    """Polls `check` on the event loop until it returns a truthy value (bounded)."""
    deadline = time.monotonic() + BOUND
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
    return value


class Servicer(pb_grpc.RuntimeServiceServicer):
    """Each method does what the test asks of it through the request or the metadata."""

    def __init__(self) -> None:
        self.metadata: list[Any] = []
        self.produced = 0  # Query messages handed to the server
        self.cancelled: list[str] = []  # methods whose handler saw CancelledError
        self.ingest_gate = asyncio.Event()
        self.ingest_gate.set()
        self.handled: list[str] = []

    async def SetDesiredStatus(
        self, request: pb.SetDesiredStatusRequest, context: Context
    ) -> pb.SetDesiredStatusResponse:
        self.handled.append("SetDesiredStatus")
        metadata = dict(context.invocation_metadata() or ())
        self.metadata.append(metadata)
        if metadata.get("mode") == "abort":
            body = error_codec.ErrorBody(503, "PipelineUnavailable", "nön-ascii 100% refused", {})
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                body.message,
                (*error_codec.encode(body), ("extra-bin", b"\x00\xff")),
            )
        if metadata.get("mode") == "hang":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.append("SetDesiredStatus")
                raise
        return pb.SetDesiredStatusResponse()

    async def Checkpoint(
        self, request: pb.CheckpointRequest, context: Context
    ) -> pb.CheckpointResponse:
        return pb.CheckpointResponse()

    async def GetCheckpointStatus(
        self, request: pb.GetCheckpointStatusRequest, context: Context
    ) -> pb.GetCheckpointStatusResponse:
        return pb.GetCheckpointStatusResponse()

    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.GetStatsResponse:
        return pb.GetStatsResponse()

    async def Approve(self, request: pb.ApproveRequest, context: Context) -> pb.ApproveResponse:
        return pb.ApproveResponse()

    async def WatchStatus(
        self, request: pb.WatchStatusRequest, context: Context
    ) -> AsyncIterator[pb.WatchStatusResponse]:
        for sequence in range(5):
            yield pb.WatchStatusResponse(deployment_id="d", sequence=sequence)

    async def Ingest(
        self, request_iterator: AsyncIterator[pb.IngestRequest], context: Context
    ) -> pb.IngestResponse:
        self.handled.append("Ingest")
        await self.ingest_gate.wait()
        digest = hashlib.sha256()
        try:
            async for message in request_iterator:
                digest.update(message.data)
        except asyncio.CancelledError:
            self.cancelled.append("Ingest")
            raise
        # The digest's first 8 bytes as the count: the client checks every byte arrived.
        return pb.IngestResponse(updates=int.from_bytes(digest.digest()[:8], "big"))

    async def Query(
        self, request: pb.QueryRequest, context: Context
    ) -> AsyncIterator[pb.QueryResponse]:
        kind, _, arg = request.sql.partition(":")
        try:
            if kind == "big":
                yield pb.QueryResponse(ndjson=os.urandom(int(arg)))
            elif kind == "many":
                count, size = map(int, arg.split("x"))
                for _ in range(count):
                    self.produced += 1
                    yield pb.QueryResponse(ndjson=b"r" * size)
            elif kind == "forever":
                while True:
                    self.produced += 1
                    yield pb.QueryResponse(ndjson=b"row\n")
        except asyncio.CancelledError:
            self.cancelled.append("Query")
            raise
        except GeneratorExit:
            self.cancelled.append("Query")
            raise


class Harness:
    def __init__(self, server: Server, servicer: Servicer, port: int) -> None:
        self.server = server
        self.servicer = servicer
        self.port = port
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CLIENT_OPTIONS)
        self.stub = pb_grpc.RuntimeServiceStub(self.channel)

    def streams(self) -> list[Stream]:
        return [s for c in self.server.connections for s in c.streams.values()]


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    servicer = Servicer()
    server = Server(interceptors=[TokenCheck(TOKEN)])
    pb_grpc.add_RuntimeServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    h = Harness(server, servicer, port)
    try:
        yield h
    finally:
        await h.channel.close(None)
        await server.stop(grace=None)


async def test_unary_call_with_metadata(harness: Harness) -> None:
    md = (*AUTH, ("x-stopcock-epoch", "7"), ("blob-bin", b"\x00\x01\xfe"), ("spaced", " 2"))
    reply = await harness.stub.SetDesiredStatus(pb.SetDesiredStatusRequest(), metadata=md)
    assert reply == pb.SetDesiredStatusResponse()
    seen = harness.servicer.metadata[-1]
    assert seen["x-stopcock-epoch"] == "7"
    assert seen["blob-bin"] == b"\x00\x01\xfe"
    assert seen["spaced"] == " 2"  # as sent: h2's strictness would have closed the connection
    assert "content-type" not in seen


async def test_server_streaming(harness: Harness) -> None:
    call = harness.stub.WatchStatus(pb.WatchStatusRequest(), metadata=AUTH)
    assert [r.sequence async for r in call] == [0, 1, 2, 3, 4]
    assert await call.code() == grpc.StatusCode.OK


async def test_client_streaming_with_a_large_message(harness: Harness) -> None:
    # Chunks of 1 MiB and one of 20 MiB (more than the window and any frame).
    chunks = [os.urandom(MiB) for _ in range(10)] + [os.urandom(20 * MiB), b"tail"]
    digest = hashlib.sha256(b"".join(chunks)).digest()

    async def requests() -> AsyncIterator[pb.IngestRequest]:
        for chunk in chunks:
            yield pb.IngestRequest(table="t", data=chunk)

    reply = await harness.stub.Ingest(requests(), metadata=AUTH)
    assert reply.updates == int.from_bytes(digest[:8], "big")


async def test_a_large_response(harness: Harness) -> None:
    size = 20 * MiB
    call = harness.stub.Query(pb.QueryRequest(sql=f"big:{size}"), metadata=AUTH)
    replies = [r async for r in call]
    assert [len(r.ndjson) for r in replies] == [size]


async def test_a_reader_that_does_not_read_holds_up_the_handler(harness: Harness) -> None:
    count = 64
    call = harness.stub.Query(pb.QueryRequest(sql=f"many:{count}x{MiB}"), metadata=AUTH)
    # The client reads nothing: the handler's sends stop at the peer's window
    # (and the socket's buffers), far below 64 MiB.
    await until(lambda: any(s.sending_blocked for s in harness.streams()), "a blocked sender")
    stalled_at = harness.servicer.produced
    assert stalled_at < count
    assert any(s.sending_blocked for s in harness.streams())
    assert harness.servicer.produced == stalled_at  # blocked means not producing
    # Reading lets it go on to the end.
    received = [len(r.ndjson) async for r in call]
    assert received == [MiB] * count
    assert harness.servicer.produced == count


async def test_a_handler_that_does_not_read_holds_up_the_sender(harness: Harness) -> None:
    harness.servicer.ingest_gate.clear()
    sent = 0

    async def requests() -> AsyncIterator[pb.IngestRequest]:
        nonlocal sent
        for _ in range(64):
            yield pb.IngestRequest(data=b"x" * MiB)
            sent += 1

    call = harness.stub.Ingest(requests(), metadata=AUTH)
    # The server takes one window's worth of the body and no more until the
    # handler reads: it buffers at most that.
    (stream,) = await until(harness.streams, "the call")
    await until(lambda: stream.held >= STREAM_WINDOW - MiB, "a full window")
    assert stream.held <= STREAM_WINDOW
    assert sent < 64
    harness.servicer.ingest_gate.set()
    reply = await call
    assert reply.updates == int.from_bytes(hashlib.sha256(b"x" * 64 * MiB).digest()[:8], "big")
    assert sent == 64


async def test_cancelling_a_query_reaches_the_handler(harness: Harness) -> None:
    call = harness.stub.Query(pb.QueryRequest(sql="forever"), metadata=AUTH)
    await call.read()
    call.cancel()
    await until(lambda: "Query" in harness.servicer.cancelled, "the handler to be cancelled")
    await until(lambda: not harness.streams(), "the call to end")


async def test_cancelling_an_ingest_reaches_the_handler(harness: Harness) -> None:
    call = harness.stub.Ingest(None, metadata=AUTH)  # no iterator: written below
    await call.write(pb.IngestRequest(data=b"partial"))
    await until(lambda: "Ingest" in harness.servicer.handled, "the handler")
    call.cancel()
    await until(lambda: "Ingest" in harness.servicer.cancelled, "the handler to be cancelled")


async def test_a_closed_connection_cancels_its_calls(harness: Harness) -> None:
    call = harness.stub.SetDesiredStatus(
        pb.SetDesiredStatusRequest(), metadata=(*AUTH, ("mode", "hang"))
    )
    await until(harness.streams, "the call")
    await harness.channel.close(None)
    # grpc.aio ends a call of a closed channel as cancelled locally.
    with pytest.raises(asyncio.CancelledError):
        await call
    await until(lambda: "SetDesiredStatus" in harness.servicer.cancelled, "the cancellation")


async def test_the_deadline_is_the_servers_too(harness: Harness) -> None:
    # A raw client that sends grpc-timeout and never cancels: the server ends the call.
    with raw_client(harness.port) as client:
        request = _grpc_message(pb.SetDesiredStatusRequest().SerializeToString())
        stream_id = client.request(
            "/stopcock.internal.v1.RuntimeService/SetDesiredStatus",
            [*AUTH, ("mode", "hang"), ("grpc-timeout", "50m")],
            request,
        )
        headers = await asyncio.to_thread(client.response, stream_id)
    assert headers[b"grpc-status"] == b"4"  # DEADLINE_EXCEEDED
    assert "SetDesiredStatus" in harness.servicer.cancelled


async def test_abort_sends_status_and_trailing_metadata(harness: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await harness.stub.SetDesiredStatus(
            pb.SetDesiredStatusRequest(), metadata=(*AUTH, ("mode", "abort"))
        )
    error = info.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "nön-ascii 100% refused"
    trailers: Any = error.trailing_metadata()
    body = error_codec.decode(trailers)
    assert body == error_codec.ErrorBody(503, "PipelineUnavailable", "nön-ascii 100% refused", {})
    assert dict(trailers)["extra-bin"] == b"\x00\xff"


async def test_a_refusing_interceptor_runs_before_the_handler(harness: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await harness.stub.SetDesiredStatus(pb.SetDesiredStatusRequest())
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    call = harness.stub.Ingest(
        iter([pb.IngestRequest(data=b"x" * MiB) for _ in range(32)]),
        metadata=(("x-stopcock-runtime-token", "wrong"),),
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert harness.servicer.handled == []


async def test_an_unknown_method_is_unimplemented(harness: Harness) -> None:
    method = harness.channel.unary_unary("/no.Such/Method", None, None)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await method(b"", metadata=AUTH)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_message_over_the_limit_is_refused() -> None:
    server = Server(max_message=MiB)
    pb_grpc.add_RuntimeServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CLIENT_OPTIONS) as ch:
            stub = pb_grpc.RuntimeServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Ingest(iter([pb.IngestRequest(data=b"x" * 2 * MiB)]))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stub.Query(pb.QueryRequest(sql=f"big:{2 * MiB}")):
                    pass
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await server.stop(grace=None)


async def test_a_request_that_is_not_grpc_is_refused(harness: Harness) -> None:
    with raw_client(harness.port) as client:
        stream_id = client.request(
            "/stopcock.internal.v1.RuntimeService/SetDesiredStatus",
            [*AUTH],
            b"{}",
            content_type="application/json",
        )
        headers = await asyncio.to_thread(client.response, stream_id)
    assert headers[b":status"] == b"415"
    reply = await harness.stub.SetDesiredStatus(pb.SetDesiredStatusRequest(), metadata=AUTH)
    assert reply == pb.SetDesiredStatusResponse()


async def test_garbage_costs_its_connection_only(harness: Harness) -> None:
    for garbage in (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        # A DATA frame on stream 0, where SETTINGS must come first.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\x00\x00\x00\x00\x00\x00" + b"junk",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64,
    ):
        received = await asyncio.to_thread(_send_and_drain, harness.port, garbage)
        # Closed by the server (after a GOAWAY, frame type 7, where h2 got that far).
        assert received is not None
    reply = await harness.stub.SetDesiredStatus(pb.SetDesiredStatusRequest(), metadata=AUTH)
    assert reply == pb.SetDesiredStatusResponse()


async def test_stop_lets_calls_finish_within_the_grace(harness: Harness) -> None:
    hung = harness.stub.SetDesiredStatus(
        pb.SetDesiredStatusRequest(), metadata=(*AUTH, ("mode", "hang"))
    )
    await until(harness.streams, "the call")
    await harness.server.stop(grace=0.1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await hung
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "SetDesiredStatus" in harness.servicer.cancelled
    assert not harness.server.connections


@pytest.mark.parametrize(
    "data", [b"", b"abc", b"0123456789", b"0123456789a", bytes(range(256)) * 9]
)
@pytest.mark.parametrize("padding", [None, 0, 3, 20])
def test_a_data_frames_repr_is_hyperframes(data: bytes, padding: int | None) -> None:
    data_frame = DataFrame(1, data=data)
    if padding is not None:
        data_frame.flags.add("PADDED")
        data_frame.pad_length = padding
    cheap = frame_repr.data_frame_body_repr(data_frame)
    assert cheap == Frame._body_repr(data_frame)  # hyperframe's own, from the whole body


def test_the_frame_guard_follows_frames_across_reads() -> None:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    fine = MAX_FRAME_SIZE.to_bytes(3, "big") + b"\x00\x00\x00\x00\x00\x01"
    too_big = (MAX_FRAME_SIZE + 1).to_bytes(3, "big") + b"\x00\x00\x00\x00\x00\x03"
    data = preface + fine + b"x" * MAX_FRAME_SIZE + too_big
    guard = FrameSizeGuard()
    pieces = [data[i : i + 7] for i in range(0, len(data), 7)]
    verdicts = [guard.accept(memoryview(piece)) for piece in pieces]
    # Refused exactly when the oversize header is complete (the last piece), not before.
    assert verdicts == [True] * (len(pieces) - 1) + [False]


# -- a raw HTTP/2 client, for what grpcio will not send ---------------------------------


def _grpc_message(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def _send_and_drain(port: int, data: bytes) -> bytes | None:
    """Sends `data`, reads until the server closes; what it sent (None: it never closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


class RawClient:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.sock.sendall(self.h2.data_to_send())

    def request(
        self,
        path: str,
        metadata: list[tuple[str, str]],
        body: bytes,
        content_type: str = "application/grpc",
    ) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "localhost"),
            (":path", path),
            ("content-type", content_type),
            ("te", "trailers"),
            *metadata,
        ]
        self.h2.send_headers(stream_id, headers)
        self.h2.send_data(stream_id, body, end_stream=True)
        self.sock.sendall(self.h2.data_to_send())
        return stream_id

    def response(self, stream_id: int) -> dict[bytes, bytes]:
        """Every header the response's HEADERS frames carried, once the stream ended."""
        headers: dict[bytes, bytes] = {}
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("the server closed the connection")
            for event in self.h2.receive_data(data):
                if (
                    isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived)
                    and event.stream_id == stream_id
                ):
                    headers.update((bytes(k), bytes(v)) for k, v in event.headers or ())
                if (
                    isinstance(event, h2.events.StreamEnded | h2.events.StreamReset)
                    and event.stream_id == stream_id
                ):
                    return headers
            self.sock.sendall(self.h2.data_to_send())


@contextlib.contextmanager
def raw_client(port: int) -> Iterator[RawClient]:
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as sock:
        yield RawClient(sock)


# -- an idle runtime process ----------------------------------------------------------------


def _run_counts(pid: int) -> dict[int, tuple[str, int]]:
    """Each thread's name and how many times it has run on a CPU (schedstat's 3rd field)."""
    counts = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = (task / "comm").read_text().strip()
            counts[int(task.name)] = (name, int((task / "schedstat").read_text().split()[2]))
    return counts


@pytest.mark.e2e
def test_an_idle_runtime_wakes_no_thread(own_stack: Stack) -> None:
    stack = own_stack
    stack.create("idle")
    stack.start("idle")
    (pid,) = stack.runtime_pids("idle")
    # The only threads: the event loop and the database's (which waits on its
    # queue without a timeout); no gRPC core.
    names = sorted(name for name, _ in _run_counts(pid).values())
    assert all(n in ("python", "python3") or n.startswith("db_") for n in names), names
    manager = stack.manager
    assert manager is not None
    # The manager pings its runtimes (HTTP/2 keepalive): stopped, it sends
    # nothing. Quiet means no thread of the runtime ran at all during an
    # interval longer than any periodic wakeup gRPC's core had (1 s). A
    # wakeup still under way as the manager stops may spoil one interval:
    # a few tries.
    os.kill(manager.pid, signal.SIGSTOP)
    try:
        interval = 2.0
        for _ in range(5):
            before = _run_counts(pid)
            time.sleep(interval)
            after = _run_counts(pid)
            woke = {
                name: after[tid][1] - runs
                for tid, (name, runs) in before.items()
                if tid in after and after[tid][1] != runs
            }
            if not woke and before.keys() == after.keys():
                break
        else:
            raise AssertionError(f"threads woke while idle: {woke}")
    finally:
        os.kill(manager.pid, signal.SIGCONT)
