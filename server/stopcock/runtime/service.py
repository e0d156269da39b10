"""The runtime's gRPC face, used only by the manager (stopcock.internal.v1)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from stopcock.internal.v1 import runtime_service_pb2 as pb
from stopcock.internal.v1 import runtime_service_pb2_grpc as pb_grpc
from stopcock.runtime.engine import DesiredStatusRefused, Engine, Status, status_json


def _report(engine: Engine, status: Status) -> pb.WatchStatusResponse:
    return pb.WatchStatusResponse(
        deployment_id=engine.deployment_id,
        incarnation_uuid=engine.incarnation_uuid,
        status=status.status,
        desired_status=status.desired_status,
        error_json=status_json(status),
        sequence=status.sequence,
    )


class RuntimeServicer(pb_grpc.RuntimeServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def WatchStatus(
        self,
        request: pb.WatchStatusRequest,
        context: grpc.aio.ServicerContext[pb.WatchStatusRequest, pb.WatchStatusResponse],
    ) -> AsyncIterator[pb.WatchStatusResponse]:
        status = self._engine.status
        yield _report(self._engine, status)
        while True:
            status = await self._engine.wait_for_change(status.sequence)
            yield _report(self._engine, status)

    async def SetDesiredStatus(
        self,
        request: pb.SetDesiredStatusRequest,
        context: grpc.aio.ServicerContext[pb.SetDesiredStatusRequest, pb.SetDesiredStatusResponse],
    ) -> pb.SetDesiredStatusResponse:
        try:
            await self._engine.set_desired(request.desired_status)
        except DesiredStatusRefused as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return pb.SetDesiredStatusResponse()
