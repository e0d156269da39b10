"""`AsyncClient`: the asyncio twin of `Client` (grpc.aio), with the same methods awaited.

Kept as a separate class rather than generated from the sync one: each
method is one line of I/O around shared conversions (models), errors
(errors.from_rpc_error) and wait decisions (waiting), so the two cannot
drift in behaviour, only in spelling.

Methods take `timeout=` seconds, as the sync client's do, rather than
leaving it to `asyncio.timeout`: the value becomes the gRPC deadline of the
call, which the manager sees too and which ends the stream on both sides.
"""

from __future__ import annotations

import asyncio
import builtins
import codecs
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from stopcock.client.connection import CALL_TIMEOUT, CHANNEL_OPTIONS, Connection
from stopcock.client.definition import PipelineDefinition
from stopcock.client.errors import StopcockError, from_rpc_error
from stopcock.client.models import (
    ApiKey,
    Checkpoint,
    CheckpointStatus,
    CreatedApiKey,
    Pipeline,
    PipelineChange,
    PutResult,
)
from stopcock.client.waiting import (
    DEFAULT_TIMEOUT,
    CheckpointWait,
    OnChange,
    PipelineWait,
    Target,
    poll_intervals,
)
from stopcock.v1 import pipeline_service_pb2 as pb
from stopcock.v1 import pipeline_service_pb2_grpc as pb_grpc

T = TypeVar("T")


class AsyncClient:
    """A grpc.aio connection to one Stopcock manager; see `Client` for the defaults.

    Use as `async with AsyncClient() as client:`, or await `close()`.
    """

    def __init__(
        self,
        address: str | None = None,
        token: str | None = None,
        call_timeout: float = CALL_TIMEOUT,
    ) -> None:
        self.connection = Connection.resolve(address, token)
        self.call_timeout = call_timeout
        self._channel = grpc.aio.insecure_channel(self.connection.address, options=CHANNEL_OPTIONS)
        self._stub = pb_grpc.PipelineServiceStub(self._channel)

    @property
    def address(self) -> str:
        return self.connection.address

    async def close(self) -> None:
        await self._channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        try:
            return await method(
                request, metadata=self.connection.metadata, timeout=self.call_timeout
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self.address) from exc

    # -- definitions ------------------------------------------------------

    async def create(self, definition: PipelineDefinition) -> Pipeline:
        request = pb.CreatePipelineRequest(pipeline=definition.to_proto())
        return Pipeline.from_proto(await self._call(self._stub.CreatePipeline, request))

    async def put(self, definition: PipelineDefinition, name: str | None = None) -> PutResult:
        request = pb.PutPipelineRequest(
            name=name or definition.name, pipeline=definition.to_proto()
        )
        reply = await self._call(self._stub.PutPipeline, request)
        return PutResult(Pipeline.from_proto(reply.pipeline), reply.created)

    async def get(self, name: str, selector: str = "all") -> Pipeline:
        request = pb.GetPipelineRequest(name=name, selector=selector)
        return Pipeline.from_proto(await self._call(self._stub.GetPipeline, request))

    async def list(self, selector: str = "all") -> builtins.list[Pipeline]:
        request = pb.ListPipelinesRequest(selector=selector)
        reply = await self._call(self._stub.ListPipelines, request)
        return [Pipeline.from_proto(p) for p in reply.pipelines]

    async def delete(self, name: str) -> None:
        await self._call(self._stub.DeletePipeline, pb.DeletePipelineRequest(name=name))

    # -- deployment -------------------------------------------------------

    async def start(self, name: str, paused: bool = False, dismiss_error: bool = True) -> None:
        request = pb.StartPipelineRequest(
            name=name, initial="paused" if paused else "running", dismiss_error=dismiss_error
        )
        await self._call(self._stub.StartPipeline, request)

    async def pause(self, name: str) -> None:
        await self._call(self._stub.PausePipeline, pb.PausePipelineRequest(name=name))

    async def resume(self, name: str) -> None:
        await self._call(self._stub.ResumePipeline, pb.ResumePipelineRequest(name=name))

    async def stop(self, name: str, force: bool = False) -> None:
        request = pb.StopPipelineRequest(name=name, force=force)
        await self._call(self._stub.StopPipeline, request)

    async def dismiss_error(self, name: str) -> None:
        await self._call(self._stub.DismissError, pb.DismissErrorRequest(name=name))

    async def clear_storage(self, name: str) -> None:
        await self._call(self._stub.ClearStorage, pb.ClearStorageRequest(name=name))

    async def checkpoint(self, name: str) -> Checkpoint:
        request = pb.CheckpointPipelineRequest(name=name)
        reply = await self._call(self._stub.CheckpointPipeline, request)
        return Checkpoint(reply.checkpoint_sequence_number, reply.incarnation_uuid)

    async def checkpoint_status(self, name: str, incarnation_uuid: str = "") -> CheckpointStatus:
        request = pb.GetCheckpointStatusRequest(name=name, incarnation_uuid=incarnation_uuid)
        reply = await self._call(self._stub.GetCheckpointStatus, request)
        return CheckpointStatus.from_proto(reply)

    # -- streams and waits --------------------------------------------------

    async def watch(
        self,
        name: str,
        after_refresh_version: int = 0,
        selector: str = "all",
        timeout: float | None = None,  # noqa: ASYNC109 (see the module doc)
    ) -> AsyncGenerator[PipelineChange, None]:
        """See Client.watch."""
        request = pb.WatchPipelineRequest(
            name=name, selector=selector, after_refresh_version=after_refresh_version
        )
        call = self._stub.WatchPipeline(request, metadata=self.connection.metadata, timeout=timeout)
        try:
            async for message in call:
                yield PipelineChange.from_proto(message)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self.address) from exc
        finally:
            call.cancel()

    async def wait_for(
        self,
        name: str,
        target: Target,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (see the module doc)
        *,
        on_change: OnChange | None = None,
        fail_on_error: bool = True,
        after_refresh_version: int = 0,
    ) -> Pipeline:
        """See Client.wait_for."""
        wait = PipelineWait(name, target, timeout, fail_on_error)
        changes = self.watch(name, after_refresh_version, timeout=timeout)
        try:
            async for change in changes:
                if on_change is not None:
                    on_change(change.pipeline)
                if wait.reached(change.pipeline):
                    return change.pipeline
        except StopcockError as exc:
            if exc.grpc_code == grpc.StatusCode.DEADLINE_EXCEEDED.name:
                raise wait.timed_out() from exc
            raise
        finally:
            await changes.aclose()
        raise wait.ended()

    async def wait_for_checkpoint(
        self,
        name: str,
        checkpoint: Checkpoint,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (see the module doc)
    ) -> CheckpointStatus:
        """See Client.wait_for_checkpoint."""
        wait = CheckpointWait(name, checkpoint, timeout)
        deadline = time.monotonic() + timeout
        pause = poll_intervals()
        while True:
            status = await self.checkpoint_status(name, checkpoint.incarnation_uuid)
            if wait.done(status):
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise wait.timed_out()
            await asyncio.sleep(min(pause(), remaining))

    async def logs(self, name: str, follow: bool = False) -> AsyncGenerator[str, None]:
        """See Client.logs."""
        call = self._stub.GetPipelineLogs(
            pb.GetPipelineLogsRequest(name=name, follow=follow),
            metadata=self.connection.metadata,
        )
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            async for chunk in call:
                text = decoder.decode(chunk.body.data)
                if text:
                    yield text
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self.address) from exc
        finally:
            call.cancel()

    # -- API keys -----------------------------------------------------------

    async def create_api_key(self, name: str, role: str) -> CreatedApiKey:
        request = pb.CreateApiKeyRequest(name=name, role=role)
        return CreatedApiKey.from_proto(await self._call(self._stub.CreateApiKey, request))

    async def list_api_keys(self) -> builtins.list[ApiKey]:
        reply = await self._call(self._stub.ListApiKeys, pb.ListApiKeysRequest())
        return [ApiKey.from_proto(k) for k in reply.api_keys]

    async def delete_api_key(self, name: str) -> None:
        await self._call(self._stub.DeleteApiKey, pb.DeleteApiKeyRequest(name=name))
