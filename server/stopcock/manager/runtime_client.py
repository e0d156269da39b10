"""The manager's client for one runtime process (stopcock.internal.v1)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from stopcock.internal.v1 import runtime_service_pb2 as pb
from stopcock.internal.v1 import runtime_service_pb2_grpc as pb_grpc

Report = pb.WatchStatusResponse
CALL_TIMEOUT = 5.0  # seconds; the runtime answers control calls at once


class RuntimeClient:
    def __init__(self, port: int) -> None:
        self.address = f"127.0.0.1:{port}"
        self._channel = grpc.aio.insecure_channel(self.address)
        self._stub = pb_grpc.RuntimeServiceStub(self._channel)

    async def watch(self) -> AsyncIterator[Report]:
        """Every status report, as the runtime pushes them."""
        call = self._stub.WatchStatus(pb.WatchStatusRequest())
        async for report in call:
            yield report

    async def set_desired(self, desired: str) -> None:
        await self._stub.SetDesiredStatus(
            pb.SetDesiredStatusRequest(desired_status=desired), timeout=CALL_TIMEOUT
        )

    async def close(self) -> None:
        await self._channel.close(None)
