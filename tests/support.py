"""A real Stopcock stack for tests: manager process, Envoy, runtime processes.

Nothing here is faked: `Stack` starts `python -m stopcock.manager.main` and
a real Envoy (through `stopcock.sidecar`, as `make run` does) on free
loopback ports with a private data directory, and cleans up every process it
caused, runtime processes included (they outlive the manager by design).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
from stopcock.manager.control.runner import runtime_run_dir
from stopcock.sidecar import EnvoySidecar
from stopcock.v1 import pipeline_service_pb2 as pb
from stopcock.v1 import pipeline_service_pb2_grpc as pb_grpc

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
PROGRAM = (
    "CREATE TABLE t (id INTEGER NOT NULL, name TEXT) WITH ('materialized' = 'true'); "
    "CREATE MATERIALIZED VIEW v AS SELECT * FROM t;"
)
WAIT = 30.0  # seconds: the bound of every wait; a healthy stack needs far less


# Ports for the processes a test starts come from below the kernel's ephemeral
# range (ip_local_port_range, 32768-60999 here): every runtime binds port 0, and
# a port picked from that range could be taken by one between the pick and the
# bind (a replica once failed to start so: "Address already in use").
_PORTS = range(20000, 32768)
_port_picks = random.Random()


def free_port() -> int:
    """A port nothing listens on now, outside the range the kernel hands out for port 0."""
    for _ in range(1000):
        port = _port_picks.choice(_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


def wait_until(check: Callable[[], T | None], what: str, timeout: float = WAIT) -> T:
    """Bounded poll: returns check()'s first truthy value, or fails naming `what`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
        except (httpx.TransportError, grpc.RpcError) as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(0.005)


def process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


class Stack:
    """Managers (one, or `replicas` sharing a PostgreSQL database and data dir) and one Envoy.

    Replica i has its own gRPC and metrics ports (`grpc_ports[i]`, `stubs[i]`)
    and log (manager.log, manager-1.log, ...); Envoy spreads REST over all.
    """

    def __init__(self, root: Path, env: dict[str, str] | None = None, replicas: int = 1) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.data_dir = root / "data"
        self.grpc_ports = [free_port() for _ in range(replicas)]
        self.metrics_ports = [free_port() for _ in range(replicas)]
        self.grpc_port = self.grpc_ports[0]
        self.rest_port = free_port()
        self.metrics_port = self.metrics_ports[0]
        self.env = {
            **os.environ,
            "STOPCOCK_DATA_DIR": str(self.data_dir),
            "STOPCOCK_GRPC_PORT": str(self.grpc_port),
            "STOPCOCK_REST_PORT": str(self.rest_port),
            "STOPCOCK_METRICS_PORT": str(self.metrics_port),
            "STOPCOCK_LOG_LEVEL": "INFO",
            **(env or {}),
        }
        self.managers: list[subprocess.Popen[bytes] | None] = [None] * replicas
        self.envoy: EnvoySidecar | None = None
        self.rest = httpx.Client(base_url=f"http://127.0.0.1:{self.rest_port}", timeout=10)
        self.channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for port in self.grpc_ports]
        self.stubs = [pb_grpc.PipelineServiceStub(channel) for channel in self.channels]
        self.channel, self.stub = self.channels[0], self.stubs[0]
        self._logs = [
            open(root / ("manager.log" if i == 0 else f"manager-{i}.log"), "ab")  # noqa: SIM115
            for i in range(replicas)
        ]

    @property
    def manager(self) -> subprocess.Popen[bytes] | None:
        return self.managers[0]

    # -- processes -----------------------------------------------------

    def start_manager(self, i: int = 0) -> None:
        env = {
            **self.env,
            "STOPCOCK_GRPC_PORT": str(self.grpc_ports[i]),
            "STOPCOCK_METRICS_PORT": str(self.metrics_ports[i]),
        }
        self.managers[i] = subprocess.Popen(
            [sys.executable, "-m", "stopcock.manager.main"],
            env=env,
            stdout=self._logs[i],
            stderr=subprocess.STDOUT,
        )
        stub = self.stubs[i]
        wait_until(
            lambda: stub.CheckHealth(pb.CheckHealthRequest(), timeout=1).status == "healthy",
            "the manager to answer",
        )

    def kill_manager(self, i: int = 0, sig: int = signal.SIGKILL) -> None:
        """SIGKILL by default: no chance to clean up, like a crash."""
        manager = self.managers[i]
        assert manager is not None
        manager.send_signal(sig)
        manager.wait(timeout=WAIT)
        self.managers[i] = None

    def start_envoy(self) -> None:
        self.envoy = EnvoySidecar(
            workdir=self.root / "envoy",
            rest_port=self.rest_port,
            upstreams=[("127.0.0.1", port) for port in self.grpc_ports],
        )
        self.envoy.start()
        self.envoy.wait_ready(WAIT)

    def runtime_pids(self, name: str | None = None) -> list[int]:
        """Live runtime processes of this stack (of one pipeline if `name`), from /proc.

        /proc rather than runtime.json: a runtime that has not listened yet
        has not written that file.
        """
        marker = str(self.data_dir / "pipelines")
        if name is not None:
            marker = str(self.data_dir / "pipelines" / self.get(name)["id"] / "run")
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            run_dir = runtime_run_dir(int(proc.name))
            ours = run_dir is not None and str(run_dir).startswith(marker)
            if ours and process_alive(int(proc.name)):
                pids.append(int(proc.name))
        return pids

    @property
    def template_socket(self) -> Path:
        return self.data_dir / "spawner.sock"

    def template_pids(self) -> list[int]:
        """Live runtime templates of this stack (its runtimes share their command line)."""
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            template = "stopcock.runtime.template" in argv and str(self.template_socket) in argv
            pid = int(proc.name)
            if template and runtime_run_dir(pid) is None and process_alive(pid):
                pids.append(pid)
        return pids

    def runtime_info(self, name: str) -> dict[str, Any]:
        pid = self.get(name)["id"]
        info: dict[str, Any] = json.loads(
            (self.data_dir / "pipelines" / pid / "run" / "runtime.json").read_text()
        )
        return info

    def close(self) -> None:
        for manager in self.managers:
            if manager is not None:
                manager.send_signal(signal.SIGCONT)  # a frozen one too
                manager.kill()
                manager.wait(timeout=WAIT)
        if self.envoy is not None:
            self.envoy.stop()
        # Templates first: they would not fork again, and they outlive the manager too.
        for pid in self.template_pids() + self.runtime_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.rest.close()
        for channel in self.channels:
            channel.close()
        for log in self._logs:
            log.close()

    # -- REST helpers --------------------------------------------------

    def create(
        self, name: str, program: str = PROGRAM, runtime_config: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "program_code": program}
        if runtime_config is not None:
            body["runtime_config"] = runtime_config
        r = self.rest.post("/v0/pipelines", json=body)
        assert r.status_code == 201, r.text
        created: dict[str, Any] = r.json()
        wait_until(lambda: self.get(name)["program_status"] == "Success", f"{name} to compile")
        return created

    def get(self, name: str, selector: str = "all") -> dict[str, Any]:
        r = self.rest.get(f"/v0/pipelines/{name}", params={"selector": selector})
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result

    def post(self, name: str, action: str, **params: str) -> httpx.Response:
        return self.rest.post(f"/v0/pipelines/{name}/{action}", params=params)

    def wait_status(self, name: str, status: str, timeout: float = WAIT) -> dict[str, Any]:
        return wait_until(
            lambda: (p := self.get(name, "status"))["deployment_status"] == status and p,
            f"{name} to be {status}",
            timeout,
        )

    def start(self, name: str, initial: str = "running") -> dict[str, Any]:
        r = self.post(name, "start", initial=initial)
        assert r.status_code == 202, r.text
        return self.wait_status(name, "Running" if initial == "running" else "Paused")

    def ingest(self, name: str, rows: list[Any], table: str = "t", **params: str) -> httpx.Response:
        return self.rest.post(
            f"/v0/pipelines/{name}/ingress/{table}",
            params={"format": "json", "array": "true", **params},
            json=rows,
        )

    def query(self, name: str, sql: str) -> list[dict[str, Any]]:
        r = self.rest.get(f"/v0/pipelines/{name}/query", params={"sql": sql, "format": "json"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) for line in r.text.splitlines()]

    def ids(self, name: str) -> list[int]:
        return [row["id"] for row in self.query(name, "SELECT id FROM t ORDER BY id")]

    def storage(self, name: str) -> Path:
        pipeline_id: str = self.get(name)["id"]
        return self.data_dir / "pipelines" / pipeline_id / "storage"

    def force_stop(self, name: str) -> dict[str, Any]:
        r = self.post(name, "stop", force="true")
        assert r.status_code == 202, r.text
        return self.wait_status(name, "Stopped")


@contextlib.contextmanager
def running_stack(
    root: Path, env: dict[str, str] | None = None, replicas: int = 1
) -> Iterator[Stack]:
    stack = Stack(root, env, replicas)
    try:
        for i in range(replicas):
            stack.start_manager(i)
        stack.start_envoy()
        yield stack
    finally:
        stack.close()
