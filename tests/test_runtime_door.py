"""Only the manager commands a runtime: its gRPC port refuses everyone else.

A local process that finds a runtime's port (runtime.json, /proc, a port
scan) and calls it directly, without the deployment's secret or with a wrong
one, is refused UNAUTHENTICATED on every method, auth on or off; the secret
is in no process's argv; the manager keeps commanding the runtime, also
after a restart that re-adopts it.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from stopcock.internal.v1 import runtime_service_pb2 as rpb
from stopcock.internal.v1 import runtime_service_pb2_grpc as rpb_grpc

from tests.support import Stack
from tests.test_checkpoints import checkpoint, rows

pytestmark = pytest.mark.e2e

CALLS: dict[str, Callable[[rpb_grpc.RuntimeServiceStub, Any], Any]] = {
    "WatchStatus": lambda s, md: next(iter(s.WatchStatus(rpb.WatchStatusRequest(), metadata=md))),
    "SetDesiredStatus": lambda s, md: s.SetDesiredStatus(
        rpb.SetDesiredStatusRequest(desired_state=rpb.RUNTIME_STATE_PAUSED), metadata=md
    ),
    "Ingest": lambda s, md: s.Ingest(
        iter([rpb.IngestRequest(table="t", update_format="raw", data=b'{"id": 99}\n')]),
        metadata=md,
    ),
    "Query": lambda s, md: list(s.Query(rpb.QueryRequest(sql="SELECT * FROM t"), metadata=md)),
    "Checkpoint": lambda s, md: s.Checkpoint(rpb.CheckpointRequest(), metadata=md),
    "GetCheckpointStatus": lambda s, md: s.GetCheckpointStatus(
        rpb.GetCheckpointStatusRequest(), metadata=md
    ),
}


def probe(port: int, metadata: tuple[tuple[str, str], ...]) -> dict[str, grpc.StatusCode]:
    codes = {}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = rpb_grpc.RuntimeServiceStub(channel)
        for method, call in CALLS.items():
            with pytest.raises(grpc.RpcError) as info:
                call(stub, metadata)
            codes[method] = info.value.code()
    return codes


def run_dir(stack: Stack, name: str) -> Path:
    pipeline_id: str = stack.get(name)["id"]
    return stack.data_dir / "pipelines" / pipeline_id / "run"


def test_a_local_client_without_the_secret_is_refused(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    assert stack.ingest(name, rows(0, 3)).status_code == 200
    port = stack.runtime_info(name)["port"]
    for metadata in ((), (("x-stopcock-runtime-token", "not-the-secret"),)):
        codes = probe(port, metadata)
        assert codes == dict.fromkeys(CALLS, grpc.StatusCode.UNAUTHENTICATED)
    # Nothing the probes asked for happened; the manager still commands it.
    assert stack.get(name, "status")["deployment_status"] == "Running"
    assert stack.ids(name) == [0, 1, 2]
    checkpoint(stack, name)
    stack.force_stop(name)


def test_the_secret_is_in_no_argv_and_its_file_is_private(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    spec = run_dir(stack, name) / "spec.json"
    assert stat.S_IMODE(spec.stat().st_mode) == 0o600
    token = json.loads(spec.read_text())["runtime_token"]
    assert len(token) >= 32
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            assert token.encode() not in argv, proc.name
    # The right secret is what lets the manager in (the probe is not refused
    # for some other reason).
    port = stack.runtime_info(name)["port"]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = rpb_grpc.RuntimeServiceStub(channel)
        reply = stub.GetCheckpointStatus(
            rpb.GetCheckpointStatusRequest(), metadata=(("x-stopcock-runtime-token", token),)
        )
        assert reply.incarnation_uuid
    stack.force_stop(name)


def test_a_restarted_manager_still_commands_its_runtimes(own_stack: Stack) -> None:
    stack = own_stack
    stack.create("door")
    stack.start("door")
    (pid,) = stack.runtime_pids("door")
    stack.kill_manager()
    stack.start_manager()
    stack.wait_status("door", "Running")
    assert stack.runtime_pids("door") == [pid]  # re-adopted, not respawned
    assert stack.ingest("door", rows(0, 2)).status_code == 200
    assert stack.ids("door") == [0, 1]
    assert stack.post("door", "pause").status_code == 202
    stack.wait_status("door", "Paused")
    assert stack.post("door", "stop").status_code == 202
    assert stack.wait_status("door", "Stopped")["deployment_error"] is None
