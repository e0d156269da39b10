"""The manager's client for one runtime process (stopcock.internal.v1).

Refusals from the runtime arrive with the contract's error body in the
`x-stopcock-error` trailer and become `ApiError`s unchanged; a runtime that
cannot be reached becomes 503 PipelineInteractionUnreachable. Every call
carries the deployment's secret: the runtime serves nobody else.

A client made with the owner's lease epoch sends it on every call; the
runtime refuses a call whose epoch is below the highest it has seen
(contract/fencing.py): `is_fenced` recognises that refusal, which tells the
caller that it no longer owns the pipeline.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, Literal, TypeVar

import grpc
from stopcock import flow_control, runtime_wire
from stopcock.contract import error_codec
from stopcock.contract.fencing import EPOCH_METADATA, MAX_EPOCH, STALE_OWNER
from stopcock.internal.v1 import runtime_service_pb2 as pb
from stopcock.internal.v1 import runtime_service_pb2_grpc as pb_grpc
from stopcock.manager.domain import errors

Report = pb.WatchStatusResponse
Pings = Literal["always", "during_calls", "never"]
T = TypeVar("T")
CALL_TIMEOUT = 5.0  # seconds; the runtime answers control calls at once
# No deadline on ingest and query: they last as long as their client sends
# (or the runtime's query timeout allows); a hung runtime is found by its
# template (control/hangs.py) or, for a runtime no template watches, by pings.
MAX_MESSAGE = 256 << 20  # bytes: gRPC clients may send large chunks
KEEPALIVE_MS = 1000
TOKEN_METADATA = "x-stopcock-runtime-token"


def is_fenced(exc: grpc.aio.AioRpcError) -> bool:
    """Whether the runtime refused the call as coming from a stale owner."""
    if exc.code() != grpc.StatusCode.ABORTED:
        return False
    pairs: Any = exc.trailing_metadata()
    body = error_codec.decode(pairs)
    return body is not None and body.error_code == STALE_OWNER


class RuntimeClient:
    def __init__(
        self,
        port: int,
        pipeline_name: str,
        token: str,
        epoch: int | None = None,
        *,
        pings: Pings = "always",
    ) -> None:
        if epoch is not None and not 0 <= epoch <= MAX_EPOCH:
            raise ValueError(f"epoch {epoch} is outside 0..{MAX_EPOCH}")
        self.address = f"127.0.0.1:{port}"
        self.epoch = epoch
        self._name = pipeline_name
        token_pair = (TOKEN_METADATA, token)
        if epoch is None:
            self._metadata: tuple[tuple[str, str], ...] = (token_pair,)
            # The runtime takes no SetDesiredStatus without an epoch. A manager
            # that holds no lease commands as epoch 0, the lowest: a runtime
            # that an owner with a lease has commanded refuses it.
            self._command_metadata = (token_pair, (EPOCH_METADATA, "0"))
        else:
            self._metadata = self._command_metadata = (token_pair, (EPOCH_METADATA, str(epoch)))
        self.pings = pings
        # A runtime that hangs (stopped, swapped out) keeps its TCP connection
        # open. HTTP/2 pings find out within seconds and break the calls (the
        # status stream too, so the pipeline shows Unavailable); but they cost
        # CPU for every idle runtime, so "never" is for runtimes whose template
        # tells of a hang (control/hangs.py) and "during_calls" for relays.
        ping_options: list[tuple[str, int]] = [
            ("grpc.keepalive_time_ms", KEEPALIVE_MS),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_MS),
            ("grpc.keepalive_permit_without_calls", int(pings == "always")),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.http2.ping_timeout_ms", KEEPALIVE_MS),
        ]
        self._channel = grpc.aio.insecure_channel(
            self.address,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
                *(ping_options if pings != "never" else []),
                *flow_control.OPTIONS,
            ],
        )
        self._stub = pb_grpc.RuntimeServiceStub(self._channel)

    def _translate(self, exc: grpc.aio.AioRpcError, request: str) -> errors.ApiError:
        # grpc.aio yields (key, value) tuples here, whatever grpc-stubs says.
        pairs: Any = exc.trailing_metadata()
        body = error_codec.decode(pairs)
        if body is not None and is_fenced(exc):
            # A newer owner has taken the pipeline over and this manager has
            # not noticed yet: a moment's state, as an unreachable runtime
            # is, not the client's fault (409 StaleOwner is internal).
            return errors.unreachable(
                self._name, request, f"the pipeline is changing owner ({body.message})"
            )
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
            metadata=self._command_metadata,
        )

    async def ingest(self, first: pb.IngestRequest, chunks: AsyncIterator[bytes]) -> int:
        """Streams a body to the runtime: `first` holds the parameters and the first chunk."""

        async def requests() -> AsyncIterator[pb.IngestRequest]:
            yield first
            async for chunk in chunks:
                yield pb.IngestRequest(data=chunk)

        reply = await self._call("ingress", self._stub.Ingest(requests(), metadata=self._metadata))
        return int(reply.updates)

    async def query(self, sql: str, fmt: str = "json") -> AsyncGenerator[bytes, None]:
        """The answer's chunks; leaving the iteration early cancels the query."""
        call = self._stub.Query(pb.QueryRequest(sql=sql, format=fmt), metadata=self._metadata)
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

    async def stats(self) -> pb.GetStatsResponse:
        return await self._call(
            "stats",
            self._stub.GetStats(
                pb.GetStatsRequest(), timeout=CALL_TIMEOUT, metadata=self._metadata
            ),
        )

    async def approve(self) -> None:
        """Lets an awaited bootstrap proceed (returns once the runtime is past it).

        A user's call relayed, as a checkpoint is: no epoch, so that another
        replica may relay it too (runtime_links); the approval itself is in
        the record before this is called.
        """
        await self._call(
            "approve",
            self._stub.Approve(pb.ApproveRequest(), timeout=CALL_TIMEOUT, metadata=self._metadata),
        )

    async def close(self) -> None:
        await self._channel.close(None)
