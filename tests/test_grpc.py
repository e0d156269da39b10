"""The native gRPC face: direct and through Envoy, rich errors, grpcurl."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from stopcock.v1 import pipeline_service_pb2 as pb
from stopcock.v1 import pipeline_service_pb2_grpc as pb_grpc

from tests.support import PROGRAM, Stack, wait_until

pytestmark = pytest.mark.e2e


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


def test_lifecycle_over_native_grpc(stack: Stack, name: str) -> None:
    stub = stack.stub
    created = stub.CreatePipeline(
        pb.CreatePipelineRequest(pipeline=pb.PipelineDefinition(name=name, program_code=PROGRAM))
    )
    assert created.name == name
    wait_until(
        lambda: stub.GetPipeline(pb.GetPipelineRequest(name=name)).program_status == "Success",
        "compiled",
    )
    _, call = stub.StartPipeline.with_call(pb.StartPipelineRequest(name=name, initial="paused"))
    assert ("x-http-status", "202") in call.initial_metadata()
    wait_until(
        lambda: stub.GetPipeline(pb.GetPipelineRequest(name=name)).deployment_status == "Paused",
        "paused",
    )
    stub.StopPipeline(pb.StopPipelineRequest(name=name, force=True))
    p = wait_until(
        lambda: (
            (q := stub.GetPipeline(pb.GetPipelineRequest(name=name))).deployment_status == "Stopped"
            and q
        ),
        "stopped",
    )
    assert isinstance(p, pb.Pipeline)
    assert p.deployment_error.WhichOneof("kind") == "null_value"


def test_errors_carry_a_rich_status(stack: Stack) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stack.stub.GetPipeline(pb.GetPipelineRequest(name="nope"))
    err = info.value
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Unknown pipeline name 'nope'"
    detail = error_info(err)
    assert (detail.reason, detail.domain) == ("UnknownPipelineName", "stopcock.dev")
    assert json.loads(detail.metadata["pipeline_name"]) == "nope"


def test_grpc_codes_for_contract_errors(stack: Stack, name: str) -> None:
    definition = pb.PipelineDefinition(name=name, program_code=PROGRAM)
    stack.stub.CreatePipeline(pb.CreatePipelineRequest(pipeline=definition))
    cases: list[tuple[Callable[[], object], grpc.StatusCode, str]] = [
        (
            lambda: stack.stub.CreatePipeline(pb.CreatePipelineRequest(pipeline=definition)),
            grpc.StatusCode.ALREADY_EXISTS,
            "DuplicateName",
        ),
        (
            lambda: stack.stub.CreatePipeline(
                pb.CreatePipelineRequest(
                    pipeline=pb.PipelineDefinition(name="a b", program_code="")
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "NameDoesNotMatchPattern",
        ),
        (
            # No program_code at all (unset, not ""): refused as Feldera does.
            lambda: stack.stub.CreatePipeline(
                pb.CreatePipelineRequest(pipeline=pb.PipelineDefinition(name=f"{name}-x"))
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "InvalidRequest",
        ),
        (
            lambda: stack.stub.CreatePipeline(
                pb.CreatePipelineRequest(
                    pipeline=pb.PipelineDefinition(name=f"{name}-x", program_code="", tags=["a,b"])
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "InvalidTag",
        ),
        (
            lambda: stack.stub.StartPipeline(pb.StartPipelineRequest(name=name, initial="x")),
            grpc.StatusCode.UNIMPLEMENTED,
            "UnsupportedPipelineAction",
        ),
        (
            lambda: stack.stub.PausePipeline(pb.PausePipelineRequest(name=name)),
            grpc.StatusCode.UNAVAILABLE,
            "PipelineInteractionNotDeployed",
        ),
    ]
    for call, code, reason in cases:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == code
        assert error_info(info.value).reason == reason


@pytest.mark.parametrize("through_envoy", [False, True])
def test_health_and_reflection(stack: Stack, through_envoy: bool) -> None:
    port = stack.rest_port if through_envoy else stack.grpc_port
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="stopcock.v1.PipelineService"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        pipelines = pb_grpc.PipelineServiceStub(channel)
        assert pipelines.CheckHealth(pb.CheckHealthRequest()).status == "healthy"


@pytest.mark.parametrize("through_envoy", [False, True])
def test_grpcurl_lists_and_calls(stack: Stack, through_envoy: bool) -> None:
    grpcurl = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which(
        "grpcurl"
    )
    assert grpcurl, "grpcurl is installed by `make tools` into .venv/bin"
    address = f"127.0.0.1:{stack.rest_port if through_envoy else stack.grpc_port}"
    listed = subprocess.run(
        [grpcurl, "-plaintext", address, "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "stopcock.v1.PipelineService" in listed.stdout.split()
    described = subprocess.run(
        [grpcurl, "-plaintext", address, "describe", "stopcock.v1.PipelineService"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "rpc StopPipeline" in described.stdout
    called = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            "-d",
            '{"name": "no-such"}',
            address,
            "stopcock.v1.PipelineService/GetPipeline",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert called.returncode != 0
    assert "NotFound" in called.stderr and "Unknown pipeline name 'no-such'" in called.stderr
    health = subprocess.run(
        [grpcurl, "-plaintext", address, "stopcock.v1.PipelineService/CheckHealth"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(health.stdout) == {"status": "healthy"}
