"""The manager's client for one runtime process (stopcock.internal.v1).

Refusals from the runtime arrive with the contract's error body in the
`x-stopcock-error` trailer and become `ApiError`s unchanged; a runtime that
cannot be reached becomes 503 PipelineInteractionUnreachable. Every call
carries the deployment's secret: the runtime serves nobody else.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, TypeVar

import grpc
from stopcock import flow_control, runtime_wire
from stopcock.contract import error_codec
from stopcock.internal.v1 import runtime_service_pb2 as pb
from stopcock.internal.v1 import runtime_service_pb2_grpc as pb_grpc
from stopcock.manager.domain import errors

Report = pb.WatchStatusResponse
T = TypeVar("T")
CALL_TIMEOUT = 5.0  # seconds; the runtime answers control calls at once
# No deadline on ingest and query: they last as long as their client sends
# (or the runtime's query timeout allows); keepalive finds a hung runtime.
MAX_MESSAGE = 256 << 20  # bytes: gRPC clients may send large chunks
KEEPALIVE_MS = 1000
TOKEN_METADATA = "x-stopcock-runtime-token"


class RuntimeClient:
    def __init__(self, port: int, pipeline_name: str, token: str) -> None:
        self.address = f"127.0.0.1:{port}"
        self._name = pipeline_name
        self._metadata = ((TOKEN_METADATA, token),)
        self._channel = grpc.aio.insecure_channel(
            self.address,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
                # A runtime that hangs (stopped, swapped out, wedged) keeps its
                # TCP connection open: HTTP/2 pings find out within seconds and
                # break the status stream, so the pipeline shows Unavailable.
                ("grpc.keepalive_time_ms", KEEPALIVE_MS),
                ("grpc.keepalive_timeout_ms", KEEPALIVE_MS),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.http2.ping_timeout_ms", KEEPALIVE_MS),
                *flow_control.OPTIONS,
            ],
        )
        self._stub = pb_grpc.RuntimeServiceStub(self._channel)

    def _translate(self, exc: grpc.aio.AioRpcError, request: str) -> errors.ApiError:
        # grpc.aio yields (key, value) tuples here, whatever grpc-stubs says.
        pairs: Any = exc.trailing_metadata()
        body = error_codec.decode(pairs)
        if body is not None:
            return errors.ApiError(
                body.http_status, body.error_code, body.message, body.details, exc.code().name
            )
        return errors.unreachable(self._name, request, f"{exc.code().name}: {exc.details()}")

    async def _call(self, request: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            raise self._translate(exc, request) from exc

    async def watch(self) -> AsyncIterator[Report]:
        """Every status report, as the runtime pushes them."""
        call = self._stub.WatchStatus(pb.WatchStatusRequest(), metadata=self._metadata)
        async for report in call:
            yield report

    async def set_desired(self, desired: str) -> None:
        await self._stub.SetDesiredStatus(
            pb.SetDesiredStatusRequest(desired_state=runtime_wire.state(desired)),
            timeout=CALL_TIMEOUT,
            metadata=self._metadata,
        )

    async def ingest(self, first: pb.IngestRequest, chunks: AsyncIterator[bytes]) -> int:
        """Streams a body to the runtime: `first` holds the parameters and the first chunk."""

        async def requests() -> AsyncIterator[pb.IngestRequest]:
            yield first
            async for chunk in chunks:
                yield pb.IngestRequest(data=chunk)

        reply = await self._call("ingress", self._stub.Ingest(requests(), metadata=self._metadata))
        return int(reply.updates)

    async def query(self, sql: str) -> AsyncGenerator[bytes, None]:
        """The answer's chunks; leaving the iteration early cancels the query."""
        call = self._stub.Query(pb.QueryRequest(sql=sql), metadata=self._metadata)
        try:
            async for chunk in call:
                yield chunk.ndjson
        except grpc.aio.AioRpcError as exc:
            raise self._translate(exc, "query") from exc
        finally:
            call.cancel()

    async def checkpoint(self) -> pb.CheckpointResponse:
        return await self._call(
            "checkpoint",
            self._stub.Checkpoint(
                pb.CheckpointRequest(), timeout=CALL_TIMEOUT, metadata=self._metadata
            ),
        )

    async def checkpoint_status(self) -> pb.GetCheckpointStatusResponse:
        return await self._call(
            "checkpoint_status",
            self._stub.GetCheckpointStatus(
                pb.GetCheckpointStatusRequest(), timeout=CALL_TIMEOUT, metadata=self._metadata
            ),
        )

    async def close(self) -> None:
        await self._channel.close(None)
