"""The PipelineService servicer: proto <-> domain, and errors on the wire.

Length (~410 lines): one thin handler per RPC of the service (twenty-odd),
each a few lines over the lifecycle; the conversions are in api.convert.

Every handler runs inside `_guard`, which turns an `ApiError` into a
trailers-only gRPC abort carrying:
  * the gRPC status code and message, and a `google.rpc.Status` with an
    `ErrorInfo` (reason = error_code) for native gRPC clients;
  * `x-http-status` and `x-stopcock-error` (the exact REST body, ASCII-only
    JSON) for Envoy's Lua filter, which rebuilds the REST answer from them.
Anything unexpected is logged here and answered as a bare 500: a client
never sees a stack trace.

Successful calls whose REST status is not 200 send `x-http-status` as
initial metadata (201 for creation, 202 for accepted desired-state changes).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc
from google.api import httpbody_pb2
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from stopcock.contract import error_codec
from stopcock.manager.api import convert, events, ingress, rendering, stats
from stopcock.manager.auth.api_keys import ApiKeys
from stopcock.manager.auth.authenticator import Authenticator
from stopcock.manager.control.health import ServiceHealth
from stopcock.manager.control.lifecycle import Lifecycle
from stopcock.manager.control.logs import read_log
from stopcock.manager.domain import errors
from stopcock.manager.domain.bootstrap_options import BootstrapOptions
from stopcock.manager.domain.definition import patch_definition, stored_definition
from stopcock.manager.domain.model import PLATFORM_VERSION, rfc3339
from stopcock.manager.store import ApiKeyRecord, StoreError
from stopcock.program import validate_program
from stopcock.v1 import pipeline_service_pb2 as pb
from stopcock.v1 import pipeline_service_pb2_grpc as pb_grpc

log = logging.getLogger("stopcock.api")

ERROR_DOMAIN = "stopcock.dev"
# The Feldera release whose REST API (and Python SDK) Stopcock's REST face
# is checked against; reported by GetConfig so that its clients connect quietly.
FELDERA_API_VERSION = "0.369.0"
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Any, Req, Context], Awaitable[Resp]]


def abort_args(err: errors.ApiError) -> tuple[grpc.StatusCode, str, tuple[Any, ...]]:
    info = error_details_pb2.ErrorInfo(
        reason=err.error_code,
        domain=ERROR_DOMAIN,
        metadata={k: json.dumps(v) for k, v in (err.details or {}).items()},
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(
        code=getattr(code_pb2, err.grpc_code), message=err.message, details=[detail]
    )
    converted = rpc_status.to_status(status)
    body = error_codec.ErrorBody(err.http_status, err.error_code, err.message, err.details)
    return (
        converted.code,
        converted.details,
        (*converted.trailing_metadata, *error_codec.encode(body)),
    )


# Envoy's limit on an upstream response's headers and trailers (envoy.yaml:
# max_response_headers_kb), and padding that exceeds it twice over.
ENVOY_MAX_RESPONSE_HEADERS = 60 << 10
_RESET_PADDING = "r" * (2 * ENVOY_MAX_RESPONSE_HEADERS)


async def abort_begun_stream(context: Context, err: errors.ApiError) -> NoReturn:
    """Ends a streamed answer that has begun (messages were sent) with `err`.

    A gRPC client gets the status and error trailers as always. A REST
    client cannot get an HTTP error any more, and Envoy's transcoder would
    end the body cleanly: a silently short answer. So, for calls that came
    through the transcoder (it adds x-envoy-original-path), the trailers are
    padded past Envoy's limit, which makes Envoy reset the stream: the
    client sees an incomplete body (curl exit 18, `incomplete chunked read`),
    as from any HTTP server that fails mid-response.
    """
    code, message, trailing = abort_args(err)
    metadata = dict(context.invocation_metadata() or ())
    if "x-envoy-original-path" in metadata:
        trailing = (*trailing, ("x-stopcock-reset", _RESET_PADDING))
    log.warning("a streamed answer failed after it began: %s", err.message)
    await context.abort(code, message, trailing)


def _rest(context: Context) -> bool:
    """Whether the call came through Envoy's transcoder (a REST client)."""
    return "x-envoy-original-path" in dict(context.invocation_metadata() or ())


def _guard(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
    @functools.wraps(handler)
    async def wrapper(self: Any, request: Req, context: Context) -> Resp:
        try:
            return await handler(self, request, context)
        except errors.ApiError as err:
            await context.abort(*abort_args(err))
        except StoreError as exc:
            # Not the request's fault, and nothing was acknowledged: say so, not 500.
            log.warning("%s: the database failed: %s", handler.__name__, exc)
            await context.abort(*abort_args(errors.database_unavailable()))
        except Exception:
            log.exception("%s failed", handler.__name__)
            await context.abort(*abort_args(errors.internal()))
        raise AssertionError("unreachable: abort raises")

    return wrapper


OPENAPI = Path(__file__).resolve().parents[4] / "generated" / "openapi.json"


@functools.cache
def _openapi() -> bytes:
    return OPENAPI.read_bytes()


def _text(chunk: bytes) -> pb.GetPipelineLogsResponse:
    return pb.GetPipelineLogsResponse(
        body=httpbody_pb2.HttpBody(content_type="text/plain; charset=utf-8", data=chunk)
    )


def _answer(content_type: str, chunk: bytes) -> pb.QueryPipelineResponse:
    return pb.QueryPipelineResponse(
        body=httpbody_pb2.HttpBody(content_type=content_type, data=chunk)
    )


def _json_body(value: Any) -> httpbody_pb2.HttpBody:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return httpbody_pb2.HttpBody(content_type="application/json", data=text.encode())


async def _http_status(context: Context, status: int) -> None:
    await context.send_initial_metadata(((error_codec.STATUS_TRAILER, str(status)),))


def _api_key(record: ApiKeyRecord) -> pb.ApiKey:
    key = pb.ApiKey(id=record.id, name=record.name, role=record.role)
    key.created_at.FromMicroseconds(record.created_at)
    return key


class PipelineServicer(pb_grpc.PipelineServiceServicer):
    def __init__(
        self, lifecycle: Lifecycle, api_keys: ApiKeys, authenticator: Authenticator | None = None
    ) -> None:
        self._lc = lifecycle
        self._keys = api_keys
        self._auth = authenticator  # None: authentication is off
        self._json = rendering.PipelineJson()

    @_guard
    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        record, key = await self._keys.create(request.name, request.role)
        await _http_status(context, 201)
        reply = pb.CreateApiKeyResponse(
            id=record.id, name=record.name, role=record.role, api_key=key
        )
        reply.created_at.FromMicroseconds(record.created_at)
        return reply

    @_guard
    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Context
    ) -> pb.ListApiKeysResponse:
        return pb.ListApiKeysResponse(api_keys=[_api_key(k) for k in await self._keys.list()])

    @_guard
    async def DeleteApiKey(
        self, request: pb.DeleteApiKeyRequest, context: Context
    ) -> pb.DeleteApiKeyResponse:
        await self._keys.delete(request.name)
        return pb.DeleteApiKeyResponse()

    @_guard
    async def CreatePipeline(
        self, request: pb.CreatePipelineRequest, context: Context
    ) -> pb.Pipeline:
        rec = await self._lc.create(convert.definition_from_proto(request.pipeline))
        await _http_status(context, 201)
        return convert.to_proto(rec, rest=_rest(context))

    @_guard
    async def PutPipeline(
        self, request: pb.PutPipelineRequest, context: Context
    ) -> pb.PutPipelineResponse:
        definition = convert.definition_from_proto(request.pipeline)
        rec, created = await self._lc.put(request.name, definition)
        if created:
            await _http_status(context, 201)
        return pb.PutPipelineResponse(
            pipeline=convert.to_proto(rec, rest=_rest(context)), created=created
        )

    @_guard
    async def PatchPipeline(
        self, request: pb.PatchPipelineRequest, context: Context
    ) -> pb.PatchPipelineResponse:
        if not request.HasField("patch"):
            # (Envoy refuses a REST PATCH without a body: see envoy/stopcock.lua.)
            raise errors.bad_request("InvalidRequest", "PatchPipelineRequest.patch is required")
        patch = convert.patch_from_proto(request.patch)
        rec = await self._lc.patch(
            request.name, lambda current: patch_definition(stored_definition(current), patch)
        )
        return pb.PatchPipelineResponse(pipeline=convert.to_proto(rec, rest=_rest(context)))

    @_guard
    async def GetPipeline(self, request: pb.GetPipelineRequest, context: Context) -> pb.Pipeline:
        full = convert.check_selector(request.selector)
        rec = await self._lc.get(request.name)
        if request.selector == convert.WITH_CONNECTORS:
            return convert.with_connectors(rec, _rest(context))
        return convert.to_proto(rec, full, _rest(context))

    @_guard
    async def ListPipelines(
        self, request: pb.ListPipelinesRequest, context: Context
    ) -> pb.ListPipelinesResponse:
        full = convert.check_selector(request.selector)
        if request.selector == convert.WITH_CONNECTORS:
            listed = [convert.with_connectors(rec) for rec in await self._lc.list()]
        else:
            listed = [convert.to_proto(rec, full) for rec in await self._lc.list()]
        return pb.ListPipelinesResponse(pipelines=listed)

    @_guard
    async def ListPipelinesJson(
        self, request: pb.ListPipelinesRequest, context: Context
    ) -> pb.ListPipelinesJsonResponse:
        # REST's list: printed here from cached renderings, passed through by
        # Envoy (see api/rendering.py for why and how it matches ListPipelines).
        full = convert.check_selector(request.selector)
        connectors = request.selector == convert.WITH_CONNECTORS
        body = self._json.list_json(await self._lc.list(), full, connectors=connectors)
        return pb.ListPipelinesJsonResponse(
            body=httpbody_pb2.HttpBody(content_type="application/json", data=body)
        )

    @_guard
    async def DeletePipeline(
        self, request: pb.DeletePipelineRequest, context: Context
    ) -> pb.DeletePipelineResponse:
        await self._lc.delete(request.name)
        return pb.DeletePipelineResponse()

    @_guard
    async def StartPipeline(
        self, request: pb.StartPipelineRequest, context: Context
    ) -> pb.StartPipelineResponse:
        dismiss = request.dismiss_error if request.HasField("dismiss_error") else True
        options = BootstrapOptions.parse(
            request.bootstrap_policy, request.silent_bootstrap, request.concurrent_bootstrap
        )
        await self._lc.start(request.name, request.initial or "running", dismiss, options)
        await _http_status(context, 202)
        return pb.StartPipelineResponse()

    @_guard
    async def PausePipeline(
        self, request: pb.PausePipelineRequest, context: Context
    ) -> pb.PausePipelineResponse:
        await self._lc.pause(request.name)
        await _http_status(context, 202)
        return pb.PausePipelineResponse()

    @_guard
    async def ResumePipeline(
        self, request: pb.ResumePipelineRequest, context: Context
    ) -> pb.ResumePipelineResponse:
        await self._lc.resume(request.name)
        await _http_status(context, 202)
        return pb.ResumePipelineResponse()

    @_guard
    async def StopPipeline(
        self, request: pb.StopPipelineRequest, context: Context
    ) -> pb.StopPipelineResponse:
        await self._lc.stop(request.name, request.force)
        await _http_status(context, 202)
        return pb.StopPipelineResponse()

    @_guard
    async def CheckpointPipeline(
        self, request: pb.CheckpointPipelineRequest, context: Context
    ) -> pb.CheckpointPipelineResponse:
        rec = await self._lc.get(request.name)
        if not rec.storage_enabled:
            raise errors.unsupported_action(
                "checkpoint", "storage is disabled in runtime_config: there is nowhere to write"
            )
        _, runtime = await self._lc.runtime_for(request.name, "checkpoint")
        reply = await runtime.checkpoint()
        return pb.CheckpointPipelineResponse(
            checkpoint_sequence_number=reply.sequence_number,
            incarnation_uuid=reply.incarnation_uuid,
        )

    @_guard
    async def GetCheckpointStatus(
        self, request: pb.GetCheckpointStatusRequest, context: Context
    ) -> pb.GetCheckpointStatusResponse:
        _, runtime = await self._lc.runtime_for(request.name, "checkpoint_status")
        reply = await runtime.checkpoint_status()
        if request.incarnation_uuid and request.incarnation_uuid != reply.incarnation_uuid:
            raise errors.bad_request(
                "IncarnationUuidMismatch",
                "The pipeline restarted since that checkpoint was requested: its incarnation is "
                f"now {reply.incarnation_uuid}; request a new checkpoint",
                {"expected": request.incarnation_uuid, "actual": reply.incarnation_uuid},
            )
        success = reply.success if reply.HasField("success") else None
        failure = (
            {
                "sequence_number": reply.failure.sequence_number,
                "error": reply.failure.error,
                "failed_at": reply.failure.failed_at,
            }
            if reply.HasField("failure")
            else None
        )
        return pb.GetCheckpointStatusResponse(
            success=convert.value(success), failure=convert.value(failure)
        )

    @_guard
    async def GetPipelineStats(
        self, request: pb.GetPipelineStatsRequest, context: Context
    ) -> pb.GetPipelineStatsResponse:
        _, runtime = await self._lc.runtime_for(request.name, "stats")
        body = json.dumps(stats.render(await runtime.stats()), separators=(",", ":"))
        return pb.GetPipelineStatsResponse(
            body=httpbody_pb2.HttpBody(content_type="application/json", data=body.encode())
        )

    @_guard
    async def IngestRows(
        self, request_iterator: AsyncIterator[pb.IngestRowsRequest], context: Context
    ) -> pb.IngestRowsResponse:
        # The body streams through in chunks (Envoy sends ~1 MiB messages):
        # nothing here holds more than one chunk.
        request = await anext(request_iterator, None)
        if request is None:
            raise errors.bad_request("InvalidRequest", "IngestRows needs at least one message", {})
        ingress.check_format(request.format, request.json_flavor, request.update_format)
        rec, runtime = await self._lc.runtime_for(request.name, "ingress")

        async def chunks() -> AsyncIterator[bytes]:
            async for message in request_iterator:
                yield message.body.data

        await runtime.ingest(ingress.to_runtime(request), chunks())
        return pb.IngestRowsResponse(token=ingress.new_token(rec))

    @_guard
    async def GetCompletionStatus(
        self, request: pb.GetCompletionStatusRequest, context: Context
    ) -> pb.GetCompletionStatusResponse:
        rec = await self._lc.get(request.name)
        ingress.check_token(rec, request.token)
        return pb.GetCompletionStatusResponse(status="complete", step=convert.value(None))

    async def WatchPipeline(
        self, request: pb.WatchPipelineRequest, context: Context
    ) -> AsyncIterator[pb.WatchPipelineResponse]:
        try:
            full = convert.check_selector(request.selector)
            await self._lc.get(request.name)  # unknown: refused before the stream begins
        except errors.ApiError as err:
            await context.abort(*abort_args(err))
        # Headers at once: from a refresh_version, the first change may be
        # long in coming, and an HTTP client awaits the headers (fetch()).
        await context.send_initial_metadata(())
        changes = self._lc.watch(request.name, max(request.after_refresh_version, 0))
        try:
            first = await anext(changes)
        except errors.ApiError as err:
            await context.abort(*abort_args(err))
        except StopAsyncIteration:
            return  # deleted at that very moment
        rec, resumed = first
        rest = _rest(context)
        yield pb.WatchPipelineResponse(pipeline=convert.to_proto(rec, full, rest), resumed=resumed)
        async for rec, resumed in changes:
            yield pb.WatchPipelineResponse(
                pipeline=convert.to_proto(rec, full, rest), resumed=resumed
            )

    async def WatchPipelines(
        self, request: pb.WatchPipelinesRequest, context: Context
    ) -> AsyncIterator[pb.WatchPipelinesResponse]:
        try:
            full = convert.check_selector(request.selector or "status")
        except errors.ApiError as err:
            await context.abort(*abort_args(err))
        await context.send_initial_metadata(())  # headers at once: fetch() awaits them
        rest = _rest(context)
        async for event in self._lc.watch_all():
            if event.record is not None:
                yield pb.WatchPipelinesResponse(pipeline=convert.to_proto(event.record, full, rest))
            elif event.deleted is not None:
                pipeline_id, name = event.deleted
                yield pb.WatchPipelinesResponse(
                    deleted=pb.DeletedPipeline(id=pipeline_id, name=name)
                )
            else:
                yield pb.WatchPipelinesResponse(synced=True)

    @_guard
    async def GetCaller(
        self, request: pb.GetCallerRequest, context: Context
    ) -> pb.GetCallerResponse:
        if self._auth is None:
            return pb.GetCallerResponse(role="write", authentication=False)
        # The interceptor has checked the credential already: this cannot fail.
        authorization = dict(context.invocation_metadata() or ()).get("authorization")
        role = await self._auth.role_of(authorization)
        return pb.GetCallerResponse(role=role, authentication=True)

    async def GetPipelineLogs(
        self, request: pb.GetPipelineLogsRequest, context: Context
    ) -> AsyncIterator[pb.GetPipelineLogsResponse]:
        try:
            rec = await self._lc.get(request.name)
            path = self._lc.log_path(rec)
        except errors.ApiError as err:
            await context.abort(*abort_args(err))
        sent = False
        async for chunk in read_log(path, request.follow, lambda: self._lc.runtime_alive(rec.id)):
            sent = True
            yield _text(chunk)
        if not sent:
            yield _text(b"")  # an empty log is an empty 200, with its content type

    async def GetOpenApi(
        self, request: pb.GetOpenApiRequest, context: Context
    ) -> pb.GetOpenApiResponse:
        return pb.GetOpenApiResponse(
            body=httpbody_pb2.HttpBody(content_type="application/json", data=_openapi())
        )

    async def QueryPipeline(
        self, request: pb.QueryPipelineRequest, context: Context
    ) -> AsyncIterator[pb.QueryPipelineResponse]:
        # A stream: errors must be raised before the first message, while
        # the answer can still be trailers-only (see _guard).
        try:
            fmt = ingress.check_query(
                request.name, request.pipeline_name, request.format, request.sql
            )
            _, runtime = await self._lc.runtime_for(request.name, "query")
            chunks = runtime.query(request.sql, fmt)
            first = await anext(chunks, b"")
        except errors.ApiError as err:
            await context.abort(*abort_args(err))
        except Exception:
            log.exception("QueryPipeline failed")
            await context.abort(*abort_args(errors.internal()))
        # From here the answer has begun: an error ends the stream with its
        # status (REST: a truncated body, never a silent short answer).
        # Returning early (the client went away) cancels the runtime's query.
        try:
            content_type = ingress.QUERY_CONTENT_TYPES[fmt]
            yield _answer(content_type, first)
            async for chunk in chunks:
                yield _answer(content_type, chunk)
        except errors.ApiError as err:
            await abort_begun_stream(context, err)
        finally:
            await chunks.aclose()

    @_guard
    async def DismissError(
        self, request: pb.DismissErrorRequest, context: Context
    ) -> pb.DismissErrorResponse:
        await self._lc.dismiss_error(request.name)
        return pb.DismissErrorResponse()

    @_guard
    async def ClearStorage(
        self, request: pb.ClearStorageRequest, context: Context
    ) -> pb.ClearStorageResponse:
        await self._lc.clear_storage(request.name)
        await _http_status(context, 202)
        return pb.ClearStorageResponse()

    @_guard
    async def GetConfig(
        self, request: pb.GetConfigRequest, context: Context
    ) -> pb.GetConfigResponse:
        return pb.GetConfigResponse(
            version=FELDERA_API_VERSION,
            # See the proto's GetConfigResponse.edition and the README (Clients)
            # for what each name switches on in Feldera's clients.
            edition="Enterprise",
            revision=PLATFORM_VERSION,
            changelog_url="https://github.com/feldera/feldera/releases",
            license_validity=convert.value(None),
            telemetry="",
            update_info=convert.value(None),
        )

    @_guard
    async def GetClusterHealth(
        self, request: pb.GetClusterHealthRequest, context: Context
    ) -> pb.GetClusterHealthResponse:
        health = await self._lc.cluster_health()
        if not health.all_healthy:
            # Feldera answers 503 with the same body when a service is unhealthy.
            await _http_status(context, 503)

        def service(s: ServiceHealth) -> pb.ServiceHealth:
            return pb.ServiceHealth(
                healthy=s.healthy,
                message=s.message,
                unchanged_since=rfc3339(s.unchanged_since),
                checked_at=rfc3339(s.checked_at),
            )

        return pb.GetClusterHealthResponse(
            all_healthy=health.all_healthy,
            api=service(health.api),
            compiler=service(health.compiler),
            runner=service(health.runner),
        )

    async def CheckHealth(
        self, request: pb.CheckHealthRequest, context: Context
    ) -> pb.CheckHealthResponse:
        return pb.CheckHealthResponse(status="healthy")

    @_guard
    async def ApprovePipeline(
        self, request: pb.ApprovePipelineRequest, context: Context
    ) -> pb.ApprovePipelineResponse:
        # The flags are only checked (Feldera's InvalidBootstrapConfig): Stopcock
        # has no output connectors to silence and bootstraps in one step.
        BootstrapOptions.parse("allow", request.silent_bootstrap, request.concurrent_bootstrap)
        await self._lc.approve(request.name)
        return pb.ApprovePipelineResponse()

    @_guard
    async def DiffPipeline(
        self, request: pb.DiffPipelineRequest, context: Context
    ) -> pb.DiffPipelineResponse:
        code = request.program_code if request.HasField("program_code") else None
        response = pb.DiffPipelineResponse()
        response.diff.update(await self._lc.diff(request.name, code))
        return response

    @_guard
    async def ListPipelineEvents(
        self, request: pb.ListPipelineEventsRequest, context: Context
    ) -> pb.ListPipelineEventsResponse:
        full = events.check_selector(request.selector)
        listed = events.list_events(await self._lc.records.versions(request.name), full)
        return pb.ListPipelineEventsResponse(body=_json_body(listed))

    @_guard
    async def GetPipelineEvent(
        self, request: pb.GetPipelineEventRequest, context: Context
    ) -> pb.GetPipelineEventResponse:
        full = events.check_selector(request.selector)
        versions = await self._lc.records.versions(request.name)
        found = events.find_event(versions, request.event_id, full)
        return pb.GetPipelineEventResponse(body=_json_body(found))

    @_guard
    async def ValidateProgram(
        self, request: pb.ValidateProgramRequest, context: Context
    ) -> pb.ValidateProgramResponse:
        if not request.HasField("program_code"):
            # Feldera's ValidateProgramRequest has `program_code: String` (actix's extractor)
            raise errors.bad_request(
                "InvalidRequest", "Json deserialize error: missing field `program_code`", None
            )
        version = request.runtime_version if request.HasField("runtime_version") else None
        answer = await asyncio.to_thread(validate_program, request.program_code, version)
        body = json.dumps(answer, separators=(",", ":")).encode()
        return pb.ValidateProgramResponse(
            body=httpbody_pb2.HttpBody(content_type="application/json", data=body)
        )
