"""Entry point of a runtime process: `python -m stopcock.runtime.main`.

The manager starts one per deployment, in a session of its own so that it
outlives a manager crash: forked from the warm template (stopcock.runtime.template,
which calls `main` with these arguments) or, without one, spawned cold, with:
  --run-dir DIR   holds spec.json (written by the manager, 0600: program,
                  config, deployment id, initial status, and the secret
                  every call from the manager carries); the runtime writes
                  runtime.json there ({pid, port, deployment_id}) once it
                  listens, so a restarted manager can find it again, and
                  `epoch` (the highest owner epoch seen, runtime/fence.py).
  --ready-fd N    a pipe: the runtime writes its port and a newline to it
                  once it accepts calls, then closes it. The manager learns
                  the port the moment it exists, without polling.

Test-only fault injection: see stopcock.runtime.faults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
from pathlib import Path

from stopcock.contract import defaults
from stopcock.contract.runtime_spec import RuntimeSpec
from stopcock.internal.v1 import runtime_service_pb2_grpc as pb_grpc
from stopcock.runtime import h2grpc
from stopcock.runtime.checkpoints import CheckpointStore
from stopcock.runtime.engine import Engine
from stopcock.runtime.faults import Faults
from stopcock.runtime.fence import Fence
from stopcock.runtime.logfile import RotatingStderr
from stopcock.runtime.service import RuntimeServicer, TokenCheck
from stopcock.runtime.spool import spool_dir

log = logging.getLogger("stopcock.runtime")


def write_atomically(path: Path, data: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


async def serve(run_dir: Path, ready_fd: int) -> None:
    spec = RuntimeSpec.read(run_dir)
    fence = Fence.load(run_dir, spec.epoch)
    faults = Faults.from_env()
    await faults.hold_startup()

    config = spec.runtime_config
    storage = None
    if config.get("storage") is not None:
        storage = CheckpointStore(Path(spec.storage_dir), faults)
    ft = config.get("fault_tolerance") or {}
    interval = None
    if ft.get("model", "none") != "none":
        interval = float(ft.get("checkpoint_interval_secs", defaults.CHECKPOINT_INTERVAL_SECS))
    engine = Engine(
        deployment_id=spec.deployment_id,
        program_code=spec.program_code,
        initial=spec.initial,
        storage=storage,
        checkpoint_interval=interval,
        query_timeout=float(config.get("query_timeout_secs", defaults.QUERY_TIMEOUT_SECS)),
        spool_dir=spool_dir(run_dir),
        bootstrap_policy=spec.bootstrap_policy,
    )
    # A gRPC server without gRPC's C core (stopcock.runtime.h2grpc says why):
    # messages up to 256 MiB each way (ingest chunks are ~1 MiB, but gRPC
    # clients may send larger ones); flow control as stopcock.flow_control.
    server = h2grpc.Server(interceptors=[TokenCheck(spec.runtime_token, then=fence.screen)])
    pb_grpc.add_RuntimeServiceServicer_to_server(RuntimeServicer(engine, fence), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    write_atomically(
        run_dir / "runtime.json",
        json.dumps({"pid": os.getpid(), "port": port, "deployment_id": spec.deployment_id}),
    )
    os.write(ready_fd, f"{port}\n".encode())
    os.close(ready_fd)
    log.info("runtime for deployment %s listening on 127.0.0.1:%d", spec.deployment_id, port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await engine.initialize()
    await stop.wait()
    await server.stop(grace=1)


def main(argv: list[str] | None = None) -> None:
    # Checkpoints, spools, logs and run files are private, as everything in
    # the data directory (stopcock.manager.datadir). The manager's umask is
    # inherited; set it here too for a runtime started some other way.
    os.umask(0o077)
    parser = argparse.ArgumentParser(
        description="Stopcock pipeline runtime (spawned by the manager)"
    )
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("STOPCOCK_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[RotatingStderr(args.run_dir / "runtime.log")],
    )
    asyncio.run(serve(args.run_dir, args.ready_fd))


if __name__ == "__main__":
    main()
