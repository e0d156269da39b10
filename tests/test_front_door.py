"""The HA front door: one Envoy over manager replicas on one PostgreSQL database.

Real pieces, nothing faked: the session's PostgreSQL server (a database of
this test's own), three `python -m stopcock.manager.main` replicas sharing it
and one data directory, and an Envoy rendered by stopcock.sidecar for the
three (health checks, LEAST_REQUEST, safe retries; envoy/envoy.yaml).

Which replica served a call is read from each replica's own metrics
(`stopcock_rpc_requests_total{method,code}`), so the calls checked use
methods no health check makes: ListPipelinesJson (REST, GET /v0/pipelines) and
GetConfig (native gRPC through Envoy's port). Envoy's health checks are
`grpc.health.v1.Health/Check`, counted under method "Check". These tests do
not depend on how replicas share the lifecycle of pipelines (owned through
leases, being built elsewhere): they list, they do not act.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from stopcock.sidecar import EnvoySidecar
from stopcock.v1 import pipeline_service_pb2 as pb
from stopcock.v1 import pipeline_service_pb2_grpc as pb_grpc

from tests.support import WAIT, free_port, wait_until

pytestmark = pytest.mark.e2e

REPLICAS = 3


@dataclass
class Replica:
    grpc_port: int
    metrics_port: int
    log: IO[bytes]
    process: subprocess.Popen[bytes] | None = None

    def served(self, method: str) -> int:
        """How many calls of `method` this replica answered OK (its metrics)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            if family.name == "stopcock_rpc_requests":
                for sample in family.samples:
                    labels = sample.labels
                    if sample.name.endswith("_total") and labels == {
                        "method": method,
                        "code": "OK",
                    }:
                        return int(sample.value)
        return 0


@dataclass
class FrontDoor:
    replicas: list[Replica]
    envoy: EnvoySidecar
    rest: httpx.Client
    channel: grpc.Channel
    stub: pb_grpc.PipelineServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.stub = pb_grpc.PipelineServiceStub(self.channel)

    def rest_call(self) -> int:
        return self.rest.get("/v0/pipelines", params={"selector": "status"}).status_code

    def grpc_call(self) -> bool:
        try:
            self.stub.GetConfig(pb.GetConfigRequest(), timeout=5)
        except grpc.RpcError:
            return False
        return True

    def served(self) -> list[tuple[int, int]]:
        """(REST ListPipelinesJson, gRPC GetConfig) answered by each live replica."""
        return [
            (r.served("ListPipelinesJson"), r.served("GetConfig"))
            for r in self.replicas
            if r.process is not None
        ]


@pytest.fixture
def front_door(postgres_url: str, tmp_path: Path) -> Iterator[FrontDoor]:
    data_dir = tmp_path / "data"  # shared by the replicas, as in `make run-ha`
    replicas: list[Replica] = []
    envoy: EnvoySidecar | None = None
    rest_port = free_port()
    rest = httpx.Client(base_url=f"http://127.0.0.1:{rest_port}", timeout=10)
    channel = grpc.insecure_channel(f"127.0.0.1:{rest_port}")
    try:
        for i in range(REPLICAS):
            replica = Replica(free_port(), free_port(), open(tmp_path / f"replica-{i}.log", "ab"))  # noqa: SIM115 (closed below)
            replicas.append(replica)
            env = {
                **os.environ,
                "STOPCOCK_DATABASE_URL": postgres_url,
                "STOPCOCK_DATA_DIR": str(data_dir),
                "STOPCOCK_GRPC_PORT": str(replica.grpc_port),
                "STOPCOCK_METRICS_PORT": str(replica.metrics_port),
            }
            replica.process = subprocess.Popen(
                [sys.executable, "-m", "stopcock.manager.main"],
                env=env,
                stdout=replica.log,
                stderr=subprocess.STDOUT,
            )
        for replica in replicas:
            with grpc.insecure_channel(f"127.0.0.1:{replica.grpc_port}") as direct:
                stub = pb_grpc.PipelineServiceStub(direct)

                def healthy(s: pb_grpc.PipelineServiceStub = stub) -> bool:
                    return s.CheckHealth(pb.CheckHealthRequest(), timeout=1).status == "healthy"

                wait_until(healthy, f"replica on port {replica.grpc_port} to answer")
        envoy = EnvoySidecar(
            workdir=tmp_path / "envoy",
            rest_port=rest_port,
            upstreams=[("127.0.0.1", r.grpc_port) for r in replicas],
        )
        envoy.start()
        envoy.wait_ready(WAIT)
        door = FrontDoor(replicas, envoy, rest, channel)
        # Envoy sends calls only to replicas a health check found SERVING,
        # and a first check can time out on a replica that has just started:
        # wait until each has answered a few (Envoy's own, every 250 ms),
        # else a replica could still be out when the spread is measured.
        for replica in replicas:

            def checked(r: Replica = replica) -> bool:
                return r.served("Check") >= 3

            wait_until(checked, "Envoy's health checks")
        wait_until(lambda: door.rest_call() == 200 and door.grpc_call(), "Envoy to route calls")
        yield door
    finally:
        rest.close()
        channel.close()
        if envoy is not None:
            envoy.stop()
        for replica in replicas:
            if replica.process is not None:
                replica.process.kill()
                replica.process.wait(WAIT)
            replica.log.close()


def test_rest_and_grpc_calls_are_spread_over_the_replicas(front_door: FrontDoor) -> None:
    calls = 45  # with three replicas, one left out by chance: ~1 in 10^7

    def window() -> bool:
        before = front_door.served()
        assert [front_door.rest_call() for _ in range(calls)] == [200] * calls
        assert [front_door.grpc_call() for _ in range(calls)] == [True] * calls
        after = front_door.served()
        rest = [a[0] - b[0] for a, b in zip(after, before, strict=True)]
        native = [a[1] - b[1] for a, b in zip(after, before, strict=True)]
        # Every call answered exactly once (no retry doubled one), in every window.
        assert sum(rest) == calls and sum(native) == calls, (rest, native)
        return all(n > 0 for n in rest) and all(n > 0 for n in native)

    # Every replica in turn. A replica whose health check timed out (200 ms:
    # a loaded machine) is out of rotation until the next one passes, so a
    # window may miss it; a later one must not.
    wait_until(window, "a window of calls that reaches every replica")


def test_calls_through_envoy_go_on_after_a_replica_is_killed(front_door: FrontDoor) -> None:
    victim = front_door.replicas[1]
    assert victim.process is not None
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(WAIT)
    victim.process = None

    # A call that was on its way to the victim when it died may fail (it
    # was not retried: it may have been carried out). Wait for the first
    # window of calls that all succeed; from then on none may fail.
    def window_succeeds() -> bool:
        return all(front_door.rest_call() == 200 and front_door.grpc_call() for _ in range(10))

    wait_until(window_succeeds, "a window of calls that all succeed after the kill")
    before = front_door.served()
    calls = 50
    rest_codes = [front_door.rest_call() for _ in range(calls)]
    native_ok = [front_door.grpc_call() for _ in range(calls)]
    assert rest_codes == [200] * calls
    assert native_ok == [True] * calls
    after = front_door.served()
    # The two survivors answered all of them, both taking a share.
    rest = [a[0] - b[0] for a, b in zip(after, before, strict=True)]
    native = [a[1] - b[1] for a, b in zip(after, before, strict=True)]
    assert sum(rest) == calls and sum(native) == calls, (rest, native)
    assert all(n > 0 for n in rest) and all(n > 0 for n in native), (rest, native)

    # Killing the other two: Envoy has no healthy replica left and says so at
    # once, in the contract's shape, rather than trying dead ones.
    for replica in front_door.replicas:
        if replica.process is not None:
            replica.process.send_signal(signal.SIGKILL)
            replica.process.wait(WAIT)
            replica.process = None

    def unavailable() -> httpx.Response | None:
        r = front_door.rest.get("/v0/pipelines")
        return r if r.status_code == 503 else None

    r = wait_until(unavailable, "Envoy to answer 503 with no replica left")
    assert r.json()["error_code"] == "ManagerUnavailable"
    assert r.headers["retry-after"] == "5"
    assert not front_door.grpc_call()
