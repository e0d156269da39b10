"""`Client`: the blocking Python client of stopcock.v1.PipelineService.

One method per RPC, typed results (stopcock.client.models), and every
failure raised as StopcockError. Deployment calls (start, stop, ...) return
as soon as the manager has recorded the request, as the API does; `wait_for`
then follows the pipeline's WatchPipeline stream, so waiting costs no
polling and sees every change in order.
"""

from __future__ import annotations

import builtins
import codecs
import time
from collections.abc import Callable, Generator
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


class Client:
    """A connection to one Stopcock manager (gRPC).

    `address` defaults to $STOPCOCK_ADDRESS, else 127.0.0.1:50051; `token`
    (an API key or a JWT, sent as `authorization: Bearer <token>`) to
    $STOPCOCK_TOKEN. `call_timeout` bounds each unary call. Use as a context
    manager, or call `close()`.
    """

    def __init__(
        self,
        address: str | None = None,
        token: str | None = None,
        call_timeout: float = CALL_TIMEOUT,
    ) -> None:
        self.connection = Connection.resolve(address, token)
        self.call_timeout = call_timeout
        self._channel = grpc.insecure_channel(self.connection.address, options=CHANNEL_OPTIONS)
        self._stub = pb_grpc.PipelineServiceStub(self._channel)

    @property
    def address(self) -> str:
        return self.connection.address

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: Any) -> T:
        try:
            return method(request, metadata=self.connection.metadata, timeout=self.call_timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self.address) from exc

    # -- definitions ------------------------------------------------------

    def create(self, definition: PipelineDefinition) -> Pipeline:
        """Creates a pipeline (DuplicateName if the name is taken); it starts compiling."""
        request = pb.CreatePipelineRequest(pipeline=definition.to_proto())
        return Pipeline.from_proto(self._call(self._stub.CreatePipeline, request))

    def put(self, definition: PipelineDefinition, name: str | None = None) -> PutResult:
        """Creates or replaces pipeline `name` (default: the definition's name)."""
        request = pb.PutPipelineRequest(
            name=name or definition.name, pipeline=definition.to_proto()
        )
        reply = self._call(self._stub.PutPipeline, request)
        return PutResult(Pipeline.from_proto(reply.pipeline), reply.created)

    def get(self, name: str, selector: str = "all") -> Pipeline:
        """One pipeline; selector "status" leaves out the large fields."""
        request = pb.GetPipelineRequest(name=name, selector=selector)
        return Pipeline.from_proto(self._call(self._stub.GetPipeline, request))

    def list(self, selector: str = "all") -> builtins.list[Pipeline]:
        """Every pipeline, ordered by name."""
        reply = self._call(self._stub.ListPipelines, pb.ListPipelinesRequest(selector=selector))
        return [Pipeline.from_proto(p) for p in reply.pipelines]

    def delete(self, name: str) -> None:
        """Deletes a fully stopped pipeline whose storage is cleared."""
        self._call(self._stub.DeletePipeline, pb.DeletePipelineRequest(name=name))

    # -- deployment -------------------------------------------------------

    def start(self, name: str, paused: bool = False, dismiss_error: bool = True) -> None:
        """Asks for the pipeline to run (or to start paused); see wait_for."""
        request = pb.StartPipelineRequest(
            name=name, initial="paused" if paused else "running", dismiss_error=dismiss_error
        )
        self._call(self._stub.StartPipeline, request)

    def pause(self, name: str) -> None:
        self._call(self._stub.PausePipeline, pb.PausePipelineRequest(name=name))

    def resume(self, name: str) -> None:
        self._call(self._stub.ResumePipeline, pb.ResumePipelineRequest(name=name))

    def stop(self, name: str, force: bool = False) -> None:
        """Suspends (checkpoint, then stop), or with `force` stops at once."""
        self._call(self._stub.StopPipeline, pb.StopPipelineRequest(name=name, force=force))

    def dismiss_error(self, name: str) -> None:
        self._call(self._stub.DismissError, pb.DismissErrorRequest(name=name))

    def clear_storage(self, name: str) -> None:
        self._call(self._stub.ClearStorage, pb.ClearStorageRequest(name=name))

    def checkpoint(self, name: str) -> Checkpoint:
        """Asks for a checkpoint; see wait_for_checkpoint for its outcome."""
        reply = self._call(self._stub.CheckpointPipeline, pb.CheckpointPipelineRequest(name=name))
        return Checkpoint(reply.checkpoint_sequence_number, reply.incarnation_uuid)

    def checkpoint_status(self, name: str, incarnation_uuid: str = "") -> CheckpointStatus:
        request = pb.GetCheckpointStatusRequest(name=name, incarnation_uuid=incarnation_uuid)
        return CheckpointStatus.from_proto(self._call(self._stub.GetCheckpointStatus, request))

    # -- streams and waits --------------------------------------------------

    def watch(
        self,
        name: str,
        after_refresh_version: int = 0,
        selector: str = "all",
        timeout: float | None = None,
    ) -> Generator[PipelineChange, None, None]:
        """Every persisted change of the pipeline, in order, as it happens.

        Starts with the current state, or after `after_refresh_version`.
        Ends when the pipeline is deleted; `timeout` bounds the whole stream
        (then StopcockError DeadlineExceeded). Closing the iterator cancels it.
        """
        request = pb.WatchPipelineRequest(
            name=name, selector=selector, after_refresh_version=after_refresh_version
        )
        call = self._stub.WatchPipeline(request, metadata=self.connection.metadata, timeout=timeout)
        try:
            for message in call:
                yield PipelineChange.from_proto(message)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self.address) from exc
        finally:
            call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves it untyped

    def wait_for(
        self,
        name: str,
        target: Target,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        on_change: OnChange | None = None,
        fail_on_error: bool = True,
        after_refresh_version: int = 0,
    ) -> Pipeline:
        """Returns the pipeline once `target` holds (a deployment_status, or a predicate).

        Follows WatchPipeline, so it sees each change as it is persisted and
        calls `on_change` with each. Raises WaitTimeout after `timeout`
        seconds, and PipelineFailed when the pipeline ends stopped with a
        deployment error while something else was awaited.

        `after_refresh_version` (see watch) judges the changes since that
        version rather than from the current state: read the version before
        making a request, and no state the request went through is missed.
        """
        wait = PipelineWait(name, target, timeout, fail_on_error)
        changes = self.watch(name, after_refresh_version, timeout=timeout)
        try:
            for change in changes:
                if on_change is not None:
                    on_change(change.pipeline)
                if wait.reached(change.pipeline):
                    return change.pipeline
        except StopcockError as exc:
            if exc.grpc_code == grpc.StatusCode.DEADLINE_EXCEEDED.name:
                raise wait.timed_out() from exc
            raise
        finally:
            changes.close()
        raise wait.ended()

    def wait_for_checkpoint(
        self, name: str, checkpoint: Checkpoint, timeout: float = DEFAULT_TIMEOUT
    ) -> CheckpointStatus:
        """Returns once `checkpoint` (or a later one) succeeded; CheckpointFailed if it failed.

        A bounded poll of GetCheckpointStatus: checkpoints have no stream.
        """
        wait = CheckpointWait(name, checkpoint, timeout)
        deadline = time.monotonic() + timeout
        pause = poll_intervals()
        while True:
            status = self.checkpoint_status(name, checkpoint.incarnation_uuid)
            if wait.done(status):
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise wait.timed_out()
            time.sleep(min(pause(), remaining))

    def logs(self, name: str, follow: bool = False) -> Generator[str, None, None]:
        """The runtime's log as text chunks; with `follow`, until the runtime is gone."""
        call = self._stub.GetPipelineLogs(
            pb.GetPipelineLogsRequest(name=name, follow=follow),
            metadata=self.connection.metadata,
        )
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            for chunk in call:
                text = decoder.decode(chunk.body.data)
                if text:
                    yield text
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self.address) from exc
        finally:
            call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves it untyped

    # -- API keys -----------------------------------------------------------

    def create_api_key(self, name: str, role: str) -> CreatedApiKey:
        """A new key (role "read" or "write"); the key is in the answer only."""
        request = pb.CreateApiKeyRequest(name=name, role=role)
        return CreatedApiKey.from_proto(self._call(self._stub.CreateApiKey, request))

    def list_api_keys(self) -> builtins.list[ApiKey]:
        reply = self._call(self._stub.ListApiKeys, pb.ListApiKeysRequest())
        return [ApiKey.from_proto(k) for k in reply.api_keys]

    def delete_api_key(self, name: str) -> None:
        self._call(self._stub.DeleteApiKey, pb.DeleteApiKeyRequest(name=name))
