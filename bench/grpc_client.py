"""gRPC load generator, run as its own process: `python -m bench.grpc_client`.

Keeps `--concurrency` unary calls in flight on one grpc.aio channel (one
HTTP/2 connection, as a normal client would) against the manager's port for
`--duration` seconds, and prints one JSON object: completed calls, errors
by status code, elapsed time, its own CPU time, and the p50/p99 latency of
the successful calls, computed here from every sample.

It is a separate process so that the client does not share an event loop
(or the GIL) with the server under test. Handshake with the parent: once
connected and warmed up it prints `ready`, then waits for a line on stdin
before loading, so that the parent's CPU sampling of the manager covers the
load window only, not this process's start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf.message import Message
from stopcock.v1 import pipeline_service_pb2 as pb
from stopcock.v1 import pipeline_service_pb2_grpc as pb_grpc

from bench.stats import percentile

METHODS = ("GetPipeline", "CheckHealth")
CALL_TIMEOUT = 10.0  # seconds; a call slower than this counts as an error

Call = Callable[[], Awaitable[Message]]


def _call(stub: pb_grpc.PipelineServiceAsyncStub, method: str, name: str) -> Call:
    if method == "GetPipeline":
        get = pb.GetPipelineRequest(name=name)
        return lambda: stub.GetPipeline(get, timeout=CALL_TIMEOUT)
    health = pb.CheckHealthRequest()
    return lambda: stub.CheckHealth(health, timeout=CALL_TIMEOUT)


async def _worker(
    call: Call, deadline: float, latencies: list[float], errors: Counter[str]
) -> None:
    while (start := time.perf_counter()) < deadline:
        try:
            await call()
        except grpc.aio.AioRpcError as exc:
            errors[exc.code().name] += 1
        else:
            latencies.append(time.perf_counter() - start)


async def run(
    port: int, method: str, name: str, concurrency: int, duration: float
) -> dict[str, object]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.PipelineServiceStub(channel)
        call = _call(stub, method, name)
        await asyncio.wait_for(channel.channel_ready(), timeout=CALL_TIMEOUT)
        await call()  # fails loudly (non-zero exit) if the subject is broken
        print("ready", flush=True)
        sys.stdin.readline()

        latencies: list[float] = []
        errors: Counter[str] = Counter()
        cpu0, start = time.process_time(), time.perf_counter()
        deadline = start + duration
        await asyncio.gather(
            *(_worker(call, deadline, latencies, errors) for _ in range(concurrency))
        )
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
    return {
        "requests": len(latencies),
        "errors": dict(errors),
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_client")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("--name", default="", help="pipeline name (GetPipeline)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    result = asyncio.run(run(args.port, args.method, args.name, args.concurrency, args.duration))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
