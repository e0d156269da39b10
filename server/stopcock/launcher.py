"""`make run`: the manager and its Envoy sidecar, supervised together.

Starts `python -m stopcock.manager.main` and Envoy (config rendered from
envoy/envoy.yaml for the configured ports), waits until both answer, and
stops both on Ctrl-C / SIGTERM. If either exits on its own, the other is
stopped and the launcher exits non-zero. Runtime processes are not stopped:
they belong to their pipelines and are re-adopted by the next manager.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from types import FrameType

from stopcock.manager.auth.settings import AuthConfigError, AuthSettings, require_loopback
from stopcock.manager.config import ConfigError, Settings
from stopcock.manager.datadir import prepare, private_umask
from stopcock.sidecar import EnvoySidecar

READY_TIMEOUT = 30.0


def wait_port(host: str, port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    """Bounded poll until `proc` listens on host:port; SystemExit if it exits or does not."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"stopcock: {what} exited with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"stopcock: {what} did not listen on {host}:{port} in {READY_TIMEOUT}s")


def main() -> None:
    # Envoy's config and log go into the data directory too: private, like
    # everything there (the manager and Envoy inherit this umask).
    private_umask()
    try:
        settings = Settings.from_env()
        auth = AuthSettings.from_env()
        require_loopback(auth, settings.bind_address, "gRPC and REST APIs")
        prepare(settings.data_dir)  # the manager checks again; this fails before starting it
    except (ConfigError, AuthConfigError) as exc:
        raise SystemExit(f"stopcock: {exc}") from exc
    host = settings.bind_address
    manager = subprocess.Popen([sys.executable, "-m", "stopcock.manager.main"])
    envoy = EnvoySidecar(
        workdir=settings.data_dir / "envoy",
        rest_port=settings.rest_port,
        grpc_port=settings.grpc_port,
        rest_address=host,
        grpc_host=host,
    )
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        wait_port(host, settings.grpc_port, manager, "the manager")
        envoy.start()
        envoy.wait_ready(READY_TIMEOUT)
        print(
            f"Stopcock is up: REST http://{host}:{settings.rest_port}/v0/pipelines "
            f"(Envoy), gRPC {host}:{settings.grpc_port}, data in {settings.data_dir}. "
            "Ctrl-C stops it.",
            flush=True,
        )
        while not stopping.wait(0.5):
            if manager.poll() is not None or not envoy.running():
                print("stopcock: a process exited; stopping", file=sys.stderr)
                raise SystemExit(1)
    finally:
        envoy.stop()
        if manager.poll() is None:
            manager.send_signal(signal.SIGTERM)
            try:
                manager.wait(timeout=10)
            except subprocess.TimeoutExpired:
                manager.kill()


if __name__ == "__main__":
    main()
