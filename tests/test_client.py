"""The Python client library (stopcock.client), sync and async, against a real stack."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
from stopcock.client import (
    AsyncClient,
    Client,
    Pipeline,
    PipelineDefinition,
    PipelineFailed,
    StopcockError,
    WaitTimeout,
)

from tests.support import PROGRAM, WAIT, Stack, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with Client(f"127.0.0.1:{stack.grpc_port}") as c:
        yield c


def compact(statuses: list[str]) -> list[str]:
    return [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]]


def test_typed_results(client: Client, name: str) -> None:
    definition = PipelineDefinition(
        name, PROGRAM, description="typed", runtime_config={"workers": 3}, tags=("a",)
    )
    created = client.put(definition)
    assert created.created
    p = created.pipeline
    assert isinstance(p, Pipeline) and p.name == name and p.description == "typed"
    assert p.runtime_config is not None and p.runtime_config["workers"] == 3
    assert isinstance(p.runtime_config["workers"], int)  # not Struct's 3.0
    assert p.tags == ("a",) and p.program_code == PROGRAM
    # Values holding null are None, not empty messages.
    assert p.deployment_error is None and p.deployment_runtime_status is None
    assert p.deployment_location is None and p.deployment_runtime_status_since is None
    assert isinstance(p.created_at, datetime) and p.created_at.tzinfo is not None
    assert (p.deployment_status, p.deployment_desired_status) == ("Stopped", "Stopped")

    compiled = client.wait_for(name, lambda q: q.program_status == "Success", timeout=WAIT)
    assert compiled.program_info is not None
    assert client.put(definition).created is False
    status_view = client.get(name, selector="status")
    assert status_view.program_code is None and status_view.runtime_config is None
    assert status_view.refresh_version == compiled.refresh_version
    assert name in [q.name for q in client.list()]
    assert client.get(name).to_dict()["created_at"].endswith("Z")


def test_errors_carry_the_contract_fields(client: Client, name: str) -> None:
    with pytest.raises(StopcockError) as caught:
        client.get("no-such-pipeline")
    err = caught.value
    assert err.error_code == "UnknownPipelineName" and err.http_status == 404
    assert err.details == {"pipeline_name": "no-such-pipeline"}
    assert err.message == "Unknown pipeline name 'no-such-pipeline'"
    assert err.grpc_code == "NOT_FOUND"
    assert str(err) == "Unknown pipeline name 'no-such-pipeline' (UnknownPipelineName)"

    client.create(PipelineDefinition(name, PROGRAM))
    with pytest.raises(StopcockError) as caught:
        client.create(PipelineDefinition(name, PROGRAM))
    assert (caught.value.error_code, caught.value.http_status) == ("DuplicateName", 409)
    with pytest.raises(StopcockError) as caught:
        client.pause(name)
    assert caught.value.error_code == "PipelineInteractionNotDeployed"
    assert caught.value.http_status == 503

    address = f"127.0.0.1:{free_port()}"
    with Client(address) as down, pytest.raises(StopcockError) as caught:
        down.list()
    assert caught.value.error_code == "ManagerUnavailable"
    assert f"cannot reach the manager at {address}" in caught.value.message


def test_client_reads_its_address_from_the_environment(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOPCOCK_ADDRESS", f"127.0.0.1:{stack.grpc_port}")
    monkeypatch.setenv("STOPCOCK_TOKEN", "a-token")
    with Client() as c:
        assert c.address == f"127.0.0.1:{stack.grpc_port}"
        assert c.connection.metadata == (("authorization", "Bearer a-token"),)
        c.list()  # auth is off: the token is sent and ignored


def test_watch_yields_every_transition_of_a_start_stop_cycle(client: Client, name: str) -> None:
    client.create(PipelineDefinition(name, PROGRAM))
    client.wait_for(name, lambda p: p.program_status == "Success", timeout=WAIT)
    changes = client.watch(name, selector="status", timeout=WAIT)
    seen = [next(changes)]  # the stream is open: nothing after this is missed
    client.start(name)
    running = client.wait_for(name, "Running", timeout=WAIT)
    for change in changes:  # buffered meanwhile: up to Running
        seen.append(change)
        if change.pipeline.deployment_status == "Running":
            break
    assert running.deployment_runtime_status == "Running" and running.deployment_error is None
    client.stop(name, force=True)
    for change in changes:
        seen.append(change)
        if change.pipeline.deployment_status == "Stopped":
            break  # stopped again, after the run (the stop came after Running)
    changes.close()
    versions = [c.pipeline.refresh_version for c in seen]
    assert versions == list(range(versions[0], versions[0] + len(versions)))  # no gap
    assert not seen[0].resumed and all(c.resumed for c in seen[1:])
    statuses = compact([c.pipeline.deployment_status for c in seen])
    assert statuses == ["Stopped", "Provisioning", "Initializing", "Running", "Stopping", "Stopped"]


def test_wait_for_times_out_with_the_last_state(client: Client, name: str) -> None:
    client.create(PipelineDefinition(name, PROGRAM))
    began = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        client.wait_for(name, "Running", timeout=0.5)
    assert (
        time.monotonic() - began >= 0.5
    )  # it waited out its timeout (no upper bound: noisy machines)
    assert caught.value.error_code == "WaitTimeout"
    assert caught.value.pipeline is not None
    assert caught.value.pipeline.deployment_status == "Stopped"
    assert "it is Stopped" in caught.value.message


def test_wait_for_raises_when_the_pipeline_fails(stack: Stack, client: Client, name: str) -> None:
    client.create(PipelineDefinition(name, PROGRAM))
    client.start(name)
    client.wait_for(name, "Running", timeout=WAIT)
    os.kill(stack.runtime_info(name)["pid"], signal.SIGKILL)
    with pytest.raises(PipelineFailed) as caught:
        client.wait_for(name, "Paused", timeout=WAIT)  # never: the runtime is dead
    assert caught.value.error_code == "RuntimeExitedUnexpectedly"
    assert caught.value.pipeline.deployment_status == "Stopped"
    # Waiting for the state it failed into is not a failure: it returns it.
    stopped = client.wait_for(name, "Stopped", timeout=WAIT)
    assert stopped.error_code == "RuntimeExitedUnexpectedly" and stopped.failed
    client.dismiss_error(name)
    assert client.get(name).deployment_error is None


async def test_async_client(stack: Stack, name: str) -> None:
    async with AsyncClient(f"127.0.0.1:{stack.grpc_port}") as client:
        put = await client.put(PipelineDefinition(name, PROGRAM))
        assert put.created and put.pipeline.name == name
        await client.start(name, paused=True)
        paused = await client.wait_for(name, "Paused", timeout=WAIT)
        assert paused.deployment_runtime_status == "Paused"
        await client.resume(name)
        await client.wait_for(name, "Running", timeout=WAIT)
        checkpoint = await client.checkpoint(name)
        status = await client.wait_for_checkpoint(name, checkpoint, timeout=WAIT)
        assert status.success is not None and status.success >= checkpoint.sequence_number
        log = "".join([text async for text in client.logs(name)])
        assert "status Paused -> Running" in log

        before = (await client.get(name, "status")).refresh_version
        await client.stop(name)
        statuses = []
        async for change in client.watch(name, after_refresh_version=before, timeout=WAIT):
            statuses.append(change.pipeline.deployment_status)
            if change.pipeline.deployment_status == "Stopped":
                break
        assert compact(statuses) == ["Running", "Suspended", "Stopping", "Stopped"]
        assert (await client.get(name)).deployment_error is None

        with pytest.raises(StopcockError) as caught:
            await client.get("no-such-pipeline")
        assert (caught.value.error_code, caught.value.http_status) == ("UnknownPipelineName", 404)
        with pytest.raises(WaitTimeout):
            await client.wait_for(name, "Running", timeout=0.2)
        await client.clear_storage(name)
        await client.wait_for(name, lambda p: p.storage_status == "Cleared", timeout=WAIT)
        await client.delete(name)
        assert name not in [p.name for p in await client.list()]
