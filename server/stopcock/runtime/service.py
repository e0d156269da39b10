"""The runtime's gRPC face, used only by the manager (stopcock.internal.v1).

Refusals carry the contract's error body in the `x-stopcock-error` trailer
and the REST status in `x-http-status`, as the manager's own errors do, so
the manager can pass them on to its client unchanged.

Only the manager may call: `TokenCheck` refuses every call that lacks the
deployment's secret, before any handler runs; then the fence (runtime/fence.py)
refuses calls from a stale owner.
"""

from __future__ import annotations

import hmac
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

import grpc
from stopcock import runtime_wire
from stopcock.contract import error_codec
from stopcock.grpc_handlers import Handler, Interceptor, refusing
from stopcock.internal.v1 import runtime_service_pb2 as pb
from stopcock.internal.v1 import runtime_service_pb2_grpc as pb_grpc
from stopcock.runtime.data import DataError
from stopcock.runtime.engine import (
    PAUSED,
    RUNNING,
    DesiredStatusRefused,
    Engine,
    NotTakingInput,
    Status,
)
from stopcock.runtime.fence import Fence, StaleOwner, presented_epoch

Context = grpc.aio.ServicerContext[Any, Any]
TOKEN_METADATA = "x-stopcock-runtime-token"
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.ABORTED,  # StaleOwner
    503: grpc.StatusCode.UNAVAILABLE,
    507: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


async def _refuse(
    context: Context, http_status: int, code: str, message: str, details: dict[str, Any]
) -> NoReturn:
    await context.abort(
        _CODES.get(http_status, grpc.StatusCode.INTERNAL),
        message,
        error_codec.encode(error_codec.ErrorBody(http_status, code, message, details)),
    )


async def _unavailable(context: Context, engine: Engine, request: str, why: str) -> NoReturn:
    await _refuse(
        context,
        503,
        "PipelineUnavailable",
        f"The pipeline cannot serve '{request}' now: {why}",
        {"request": request, "reason": why, "status": engine.status.status},
    )


def _report(engine: Engine, status: Status) -> pb.WatchStatusResponse:
    details = status.details
    if status.status in (RUNNING, PAUSED):
        # As Feldera's runtime reports a running or paused pipeline
        # (RuntimeStatusDetails.connector_stats, adapters/src/server.rs).
        details = {**(details or {}), "connector_stats": {"num_errors": engine.input_errors}}
    return pb.WatchStatusResponse(
        deployment_id=engine.deployment_id,
        incarnation_uuid=engine.incarnation_uuid,
        sequence=status.sequence,
        state=runtime_wire.state(status.status),
        desired_state=runtime_wire.state(status.desired_status),
        error=runtime_wire.struct(status.error),
        details=runtime_wire.struct(details),
        checkpoints=runtime_wire.checkpoints(status.checkpoints),
    )


class RuntimeServicer(pb_grpc.RuntimeServiceServicer):
    def __init__(self, engine: Engine, fence: Fence) -> None:
        self._engine = engine
        self._fence = fence

    async def WatchStatus(
        self, request: pb.WatchStatusRequest, context: Context
    ) -> AsyncIterator[pb.WatchStatusResponse]:
        # The fence admitted the epoch (if any) already: it cannot be malformed.
        metadata: Any = context.invocation_metadata()
        opened = presented_epoch(metadata)
        status = self._engine.status
        yield _report(self._engine, status)
        while True:
            try:
                status = await self._fence.unless_superseded(
                    opened, self._engine.wait_for_change(status.sequence)
                )
            except StaleOwner as exc:
                b = exc.body
                await _refuse(context, b.http_status, b.error_code, b.message, b.details)
            yield _report(self._engine, status)

    async def SetDesiredStatus(
        self, request: pb.SetDesiredStatusRequest, context: Context
    ) -> pb.SetDesiredStatusResponse:
        try:
            await self._engine.set_desired(runtime_wire.state_name(request.desired_state))
        except DesiredStatusRefused as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return pb.SetDesiredStatusResponse()

    async def Ingest(
        self, request_iterator: AsyncIterator[pb.IngestRequest], context: Context
    ) -> pb.IngestResponse:
        try:
            first = await anext(request_iterator, None)
            if first is None:
                return pb.IngestResponse(updates=0)

            async def chunks() -> AsyncIterator[bytes]:
                yield first.data
                async for message in request_iterator:
                    yield message.data

            count = await self._engine.ingest(
                first.table,
                first.update_format,
                first.array,
                first.force,
                chunks(),
                fmt=first.format or "json",
            )
        except NotTakingInput as exc:
            await _unavailable(context, self._engine, "ingress", str(exc))
        except DataError as exc:
            await _refuse(context, exc.http_status, exc.code, exc.message, exc.details)
        return pb.IngestResponse(updates=count)

    async def Query(
        self, request: pb.QueryRequest, context: Context
    ) -> AsyncIterator[pb.QueryResponse]:
        # Rows are read as they are sent: a slow reader holds back the query,
        # not memory. Leaving this generator (the caller cancelled) stops it.
        rows = self._engine.query(request.sql, request.format or "json")
        try:
            async for chunk in rows:
                yield pb.QueryResponse(ndjson=chunk)
        except NotTakingInput as exc:
            await _unavailable(context, self._engine, "query", str(exc))
        except DataError as exc:
            await _refuse(context, exc.http_status, exc.code, exc.message, exc.details)
        finally:
            await rows.aclose()

    async def Checkpoint(
        self, request: pb.CheckpointRequest, context: Context
    ) -> pb.CheckpointResponse:
        try:
            seq = self._engine.request_checkpoint()
        except NotTakingInput as exc:
            await _unavailable(context, self._engine, "checkpoint", str(exc))
        return pb.CheckpointResponse(
            sequence_number=seq, incarnation_uuid=self._engine.incarnation_uuid
        )

    async def GetCheckpointStatus(
        self, request: pb.GetCheckpointStatusRequest, context: Context
    ) -> pb.GetCheckpointStatusResponse:
        engine = self._engine
        failure = engine.checkpoint_failure
        return pb.GetCheckpointStatusResponse(
            success=engine.checkpoint_success,
            failure=pb.CheckpointFailure(**failure) if failure else None,
            incarnation_uuid=engine.incarnation_uuid,
        )

    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.GetStatsResponse:
        engine = self._engine
        status = engine.status
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return pb.GetStatsResponse(
            incarnation_uuid=engine.incarnation_uuid,
            state=runtime_wire.state(status.status),
            processed_records=engine.processed_records,
            ingests_in_flight=engine.ingests_in_flight,
            start_time=int(engine.started_at),
            uptime_msecs=int((time.monotonic() - engine.started_monotonic) * 1000),
            rss_bytes=_rss_bytes(usage),
            cpu_msecs=int((usage.ru_utime + usage.ru_stime) * 1000),
            storage_bytes=sum(int(c.get("size", 0)) for c in status.checkpoints),
        )

    async def Approve(self, request: pb.ApproveRequest, context: Context) -> pb.ApproveResponse:
        await self._engine.approve()
        return pb.ApproveResponse()


def _rss_bytes(usage: resource.struct_rusage) -> int:
    """The current resident set size; the peak (ru_maxrss, KiB) where /proc is absent."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return usage.ru_maxrss * 1024
    return resident_pages * resource.getpagesize()


class TokenCheck(Interceptor):
    """Refuses any call without the deployment's secret (compared in constant time).

    `then` screens the calls that pass, and only those: a check with effects
    (the fence records a new epoch) must never act for a caller without the
    secret. An interceptor listed after this one would run first, inside
    `continuation`.
    """

    def __init__(
        self,
        token: str,
        then: Callable[[grpc.HandlerCallDetails, Handler], Awaitable[Handler]] | None = None,
    ) -> None:
        self._token = token.encode()
        self._then = then

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        presented = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == TOKEN_METADATA:
                presented = value.encode() if isinstance(value, str) else value
        if handler is None:
            return handler  # unknown method: gRPC answers UNIMPLEMENTED
        if not (self._token and hmac.compare_digest(presented, self._token)):
            return refusing(handler, grpc.StatusCode.UNAUTHENTICATED, "only the manager may call")
        return handler if self._then is None else await self._then(handler_call_details, handler)
