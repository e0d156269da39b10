"""The composition root: managers built in one process, each with its own state.

No processes: build_server over a SQLite store in a temporary directory, on
port 0, called with a grpc.aio channel. Runtimes are never spawned (no
pipeline is started).
"""

from __future__ import annotations

from pathlib import Path

import grpc
from prometheus_client import generate_latest
from stopcock.manager.app import Deps, Manager, build_server
from stopcock.manager.config import Settings
from stopcock.manager.control.runner import LocalProcessRunner
from stopcock.manager.store.sqlite import AsyncStore
from stopcock.v1 import pipeline_service_pb2 as pb
from stopcock.v1 import pipeline_service_pb2_grpc as pb_grpc


def settings(data_dir: Path) -> Settings:
    return Settings(
        grpc_port=0,
        rest_port=0,
        bind_address="127.0.0.1",
        data_dir=data_dir,
        log_level="INFO",
        metrics_port=0,
    )


async def build(data_dir: Path) -> tuple[Manager, AsyncStore]:
    store = await AsyncStore(data_dir / "stopcock.db").open()
    manager = await build_server(
        settings(data_dir), Deps(store, LocalProcessRunner(data_dir), verifier=None)
    )
    return manager, store


async def test_two_managers_in_one_process_keep_their_own_state(tmp_path: Path) -> None:
    (a, store_a), (b, store_b) = await build(tmp_path / "a"), await build(tmp_path / "b")
    try:
        assert a.port != b.port and a.port > 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{a.port}") as channel:
            stub = pb_grpc.PipelineServiceStub(channel)
            definition = pb.PipelineDefinition(name="only-in-a", program_code="")
            await stub.CreatePipeline(pb.CreatePipelineRequest(pipeline=definition))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{b.port}") as channel:
            stub = pb_grpc.PipelineServiceStub(channel)
            listed = await stub.ListPipelines(pb.ListPipelinesRequest())
            assert list(listed.pipelines) == []
        # Each manager's registry counts its own pipelines.
        assert b'stopcock_pipelines{deployment_status="Stopped"} 1.0' in generate_latest(a.metrics)
        assert b"stopcock_pipelines{" not in generate_latest(b.metrics)
    finally:
        for manager, store in ((a, store_a), (b, store_b)):
            await manager.stop(grace=0)
            await store.close()
