"""An unexpected failure inside the manager is a bare 500: no detail leaks; a database
that does not answer is a 503 DatabaseUnavailable."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from stopcock.manager.api.servicer import PipelineServicer
from stopcock.manager.store import StoreError
from stopcock.v1 import pipeline_service_pb2 as pb
from stopcock.v1 import pipeline_service_pb2_grpc as pb_grpc


class ExplodingLifecycle:
    """A lifecycle whose every read fails: the store for pipeline "db", else internally."""

    async def get(self, name: str) -> object:
        if name == "db":
            raise StoreError("the PostgreSQL store failed: connection refused (secret host)")
        raise RuntimeError(f"secret internals of {name}")


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    pb_grpc.add_PipelineServiceServicer_to_server(
        PipelineServicer(ExplodingLifecycle(), None),  # type: ignore[arg-type]
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    await server.stop(None)


async def test_internal_errors_are_opaque(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.PipelineServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetPipeline(pb.GetPipelineRequest(name="p"))
    err = info.value
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (err.details() or "")
    pairs: Any = err.trailing_metadata() or ()  # (key, value) tuples at run time
    trailers: dict[str, Any] = dict(pairs)
    assert trailers["x-http-status"] == "500"
    body = json.loads(str(trailers["x-stopcock-error"]))
    assert body == {
        "message": "An internal error occurred",
        "error_code": "InternalError",
        "details": {},
    }


async def test_a_database_that_does_not_answer_is_a_503(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.PipelineServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetPipeline(pb.GetPipelineRequest(name="db"))
    err = info.value
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    pairs: Any = err.trailing_metadata() or ()
    trailers: dict[str, Any] = dict(pairs)
    assert trailers["x-http-status"] == "503"
    body = json.loads(str(trailers["x-stopcock-error"]))
    assert body["error_code"] == "DatabaseUnavailable"
    assert "secret" not in json.dumps(body)
