"""The request interceptor: request ids, the pipeline in the log context, RPC metrics.

In process, no other process: a grpc.aio server on port 0 with the
RequestInterceptor (and, where a test needs refusals, an interceptor after
it that refuses some calls, as authentication does), serving a probe
service whose handlers answer with the log context they see.

The interceptor reuses one instrumented handler per method across calls,
so these tests check above all that nothing of one call leaks into another:
concurrent calls each see their own request id and pipeline, and refusals
and failures are counted under their own codes between accepted calls.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry
from stopcock.grpc_handlers import Context, Handler, Interceptor, metadata_value, refusing
from stopcock.manager.observability import (
    RequestInterceptor,
    manager_registry,
    new_request_id,
    pipeline_var,
    request_var,
)
from stopcock.v1 import pipeline_service_pb2 as pb

SERVICE = "stopcock.test.Probe"
Named = pb.GetPipelineRequest  # has `name`
Unnamed = pb.CheckHealthRequest  # has no `name`
Answer = pb.CheckHealthResponse  # `status` carries the context seen, as JSON


def _seen() -> Answer:
    return Answer(status=json.dumps({"request": request_var.get(), "pipeline": pipeline_var.get()}))


class Gate:
    """Holds the calls marked `together` until `size` of them are inside their handler."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.inside = 0
        self.all_in = asyncio.Event()

    async def meet(self) -> None:
        self.inside += 1
        if self.inside >= self.size:
            self.all_in.set()
        await self.all_in.wait()


def _unary(gate: Gate) -> Callable[[Any, Context], Awaitable[Answer]]:
    async def unary(request: Any, context: Context) -> Answer:
        metadata: Any = context.invocation_metadata()  # a tuple of pairs on a server
        if metadata_value(metadata, "together") == "yes":
            await gate.meet()
        return _seen()

    return unary


async def _fail(request: Any, context: Context) -> Answer:
    raise RuntimeError("a bug")


async def _stream(request: Any, context: Context) -> AsyncIterator[Answer]:
    for _ in range(2):
        yield _seen()


async def _upload(requests: AsyncIterator[Any], context: Context) -> Answer:
    async for _ in requests:
        pass
    return _seen()


def _handlers(gate: Gate) -> grpc.GenericRpcHandler[Any, Any]:
    named: dict[str, Callable[..., Any]] = {
        "request_deserializer": Named.FromString,
        "response_serializer": Answer.SerializeToString,
    }
    unnamed = {**named, "request_deserializer": Unnamed.FromString}
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Named": grpc.unary_unary_rpc_method_handler(_unary(gate), **named),
            "Unnamed": grpc.unary_unary_rpc_method_handler(_unary(gate), **unnamed),
            "Fail": grpc.unary_unary_rpc_method_handler(_fail, **named),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream, **named),
            "Upload": grpc.stream_unary_rpc_method_handler(_upload, **named),
        },
    )


class RefuseMarked(Interceptor):
    """Refuses calls carrying `refuse: yes`, with a handler made per call (as auth does)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(details)
        if metadata_value(details.invocation_metadata, "refuse") == "yes":
            return refusing(handler, grpc.StatusCode.PERMISSION_DENIED, "refused")
        return handler


Call = Callable[..., Any]


class Probe:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        ser, de = Named.SerializeToString, Answer.FromString
        self.named = channel.unary_unary(f"/{SERVICE}/Named", ser, de)
        self.unnamed = channel.unary_unary(f"/{SERVICE}/Unnamed", Unnamed.SerializeToString, de)
        self.fail = channel.unary_unary(f"/{SERVICE}/Fail", ser, de)
        self.stream = channel.unary_stream(f"/{SERVICE}/Stream", ser, de)
        self.upload = channel.stream_unary(f"/{SERVICE}/Upload", ser, de)


def seen(answer: Answer) -> dict[str, str | None]:
    result: dict[str, str | None] = json.loads(answer.status)
    return result


@asynccontextmanager
async def serving(gate: Gate | None = None) -> AsyncIterator[Probe]:
    server = grpc.aio.server(interceptors=[RequestInterceptor(), RefuseMarked()])
    server.add_generic_rpc_handlers((_handlers(gate or Gate(0)),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Probe(channel)
    finally:
        await server.stop(grace=None)


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    yield manager_registry(lambda: ())


def counted(registry: CollectorRegistry, method: str, code: str) -> float:
    labels = {"method": method, "code": code}
    return registry.get_sample_value("stopcock_rpc_requests_total", labels) or 0.0


def timed(registry: CollectorRegistry, method: str) -> float:
    labels = {"method": method}
    return registry.get_sample_value("stopcock_rpc_duration_seconds_count", labels) or 0.0


async def test_request_ids_and_pipelines_belong_to_their_own_call() -> None:
    # The 20 calls below are all in their handlers at once.
    async with serving(Gate(20)) as probe:
        calls = [
            probe.named(
                Named(name=f"p{i}"), metadata=(("x-request-id", f"req-{i}"), ("together", "yes"))
            )
            for i in range(20)
        ]
        answers = await asyncio.gather(*calls)
        assert [seen(a) for a in answers] == [
            {"request": f"req-{i}", "pipeline": f"p{i}"} for i in range(20)
        ]

        # Without x-request-id, each call gets a fresh id of its own.
        fresh = [
            seen(a)["request"]
            for a in await asyncio.gather(*(probe.named(Named(name="p")) for _ in range(5)))
        ]
        assert len(set(fresh)) == 5
        assert all(r is not None and uuid.UUID(hex=r).version == 4 for r in fresh)

        # No pipeline for a request without a name field, or with an empty name;
        # nothing left over from the calls before.
        unnamed = seen(await probe.unnamed(Unnamed(), metadata=(("x-request-id", "u"),)))
        assert unnamed == {"request": "u", "pipeline": None}
        assert seen(await probe.named(Named(name=""), metadata=(("x-request-id", "e"),))) == {
            "request": "e",
            "pipeline": None,
        }

        streamed = [
            seen(a) async for a in probe.stream(Named(name="s"), metadata=(("x-request-id", "st"),))
        ]
        assert streamed == [{"request": "st", "pipeline": "s"}] * 2

        # A client stream's pipeline is in its messages, not read by the interceptor.
        uploaded = await probe.upload(iter([Named(name="up")]), metadata=(("x-request-id", "cs"),))
        assert seen(uploaded) == {"request": "cs", "pipeline": None}


async def test_calls_are_counted_and_timed_under_their_codes(registry: CollectorRegistry) -> None:
    before = {
        (m, c): counted(registry, m, c)
        for m in ("Named", "Fail", "Stream", "Upload")
        for c in ("OK", "PERMISSION_DENIED", "UNKNOWN")
    }
    timed_before = timed(registry, "Named")
    refuse = (("refuse", "yes"),)
    async with serving() as probe:
        # Accepted and refused calls in turn: a refusal's handler is not the
        # method's, and must neither be counted as OK nor disturb what follows.
        for _ in range(3):
            await probe.named(Named(name="p"))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await probe.named(Named(name="p"), metadata=refuse)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await probe.fail(Named(name="p"))
            assert failed.value.code() == grpc.StatusCode.UNKNOWN
        assert len([a async for a in probe.stream(Named(name="s"))]) == 2
        with pytest.raises(grpc.aio.AioRpcError):
            async for _ in probe.stream(Named(name="s"), metadata=refuse):
                pass
        await probe.upload(iter([Named(name="u")]))

    def delta(method: str, code: str) -> float:
        return counted(registry, method, code) - before[method, code]

    assert delta("Named", "OK") == 3
    assert delta("Named", "PERMISSION_DENIED") == 3
    assert timed(registry, "Named") - timed_before == 6
    assert delta("Fail", "UNKNOWN") == 2
    assert delta("Fail", "OK") == 0
    assert delta("Stream", "OK") == 1
    assert delta("Stream", "PERMISSION_DENIED") == 1
    assert delta("Upload", "OK") == 1


def test_metadata_value_reads_the_last_text_value() -> None:
    metadata = (("a", "1"), ("b", "2"), ("a", "3"), ("c-bin", b"\x00"))
    assert metadata_value(metadata, "a") == "3"
    assert metadata_value(metadata, "b") == "2"
    assert metadata_value(metadata, "c-bin") is None
    assert metadata_value(metadata, "missing") is None
    assert metadata_value(None, "a") is None


def test_new_request_ids_are_uuid4_hex() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    for request_id in ids:
        parsed = uuid.UUID(hex=request_id)
        assert parsed.hex == request_id and len(request_id) == 32
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
