"""gRPC load generator, run as its own process: `python -m bench.grpc_client`.

Keeps `--concurrency` unary calls in flight on one grpc.aio channel (one
HTTP/2 connection, as a normal client would) against the manager's port for
`--duration` seconds, and prints one JSON object: completed calls, errors
by status code, elapsed time, its own CPU time, and the p50/p99 latency of
the successful calls, computed here from every sample.

`PutDescription` is a desired-state write (bench.stores): PutPipeline of a
pipeline's own definition with a new `description`, so that every call
commits one change and none starts a runtime or a compile. `--name` is then
a comma-separated list of pipelines; worker k writes the ones at positions
k, k + concurrency, ... in turn (its own, when there are enough, so that
workers do not queue on each other's row locks). A description carries this
process's nonce and a sequence number: no write repeats the current value
(an unchanged definition would be answered without a commit). An answer that
is not the write itself (created, another program or configuration version)
counts as an error, `MISMATCH`.

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
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf.message import Message
from stopcock.v1 import pipeline_service_pb2 as pb
from stopcock.v1 import pipeline_service_pb2_grpc as pb_grpc

from bench.stats import percentile

METHODS = ("GetPipeline", "CheckHealth", "PutDescription")
CALL_TIMEOUT = 10.0  # seconds; a call slower than this counts as an error

Call = Callable[[], Awaitable[Message]]


class Mismatch(Exception):
    """A write answered with something other than itself."""


def _call(stub: pb_grpc.PipelineServiceAsyncStub, method: str, name: str) -> Call:
    if method == "GetPipeline":
        get = pb.GetPipelineRequest(name=name)
        return lambda: stub.GetPipeline(get, timeout=CALL_TIMEOUT)
    health = pb.CheckHealthRequest()
    return lambda: stub.CheckHealth(health, timeout=CALL_TIMEOUT)


async def _put_calls(
    stub: pb_grpc.PipelineServiceAsyncStub, names: list[str], concurrency: int
) -> list[Call]:
    """One call per worker, each cycling over its pipelines (see the module doc)."""
    current = [await stub.GetPipeline(pb.GetPipelineRequest(name=n)) for n in names]
    nonce = f"{os.getpid()}.{time.time_ns()}"
    calls: list[Call] = []
    for k in range(concurrency):
        mine = [current[j] for j in range(len(current)) if j % concurrency == k % len(current)]
        calls.append(_put_worker(stub, mine, f"{nonce}.{k}"))
    return calls


def _put_worker(stub: pb_grpc.PipelineServiceAsyncStub, mine: list[pb.Pipeline], tag: str) -> Call:
    seq = 0

    async def put() -> Message:
        nonlocal seq
        p = mine[seq % len(mine)]
        description = f"bench write {tag}.{seq}"
        seq += 1
        definition = pb.PipelineDefinition(
            name=p.name,
            description=description,
            runtime_config=p.runtime_config,
            program_code=p.program_code,
            udf_rust=p.udf_rust,
            udf_toml=p.udf_toml,
            program_config=p.program_config,
            tags=p.tags,
        )
        answer = await stub.PutPipeline(
            pb.PutPipelineRequest(name=p.name, pipeline=definition), timeout=CALL_TIMEOUT
        )
        got = answer.pipeline
        if (
            answer.created
            or got.description != description
            or (got.version, got.program_version) != (p.version, p.program_version)
        ):
            raise Mismatch(f"{p.name}: {answer}")
        return answer

    return put


async def _worker(
    call: Call, deadline: float, latencies: list[float], errors: Counter[str]
) -> None:
    while (start := time.perf_counter()) < deadline:
        try:
            await call()
        except grpc.aio.AioRpcError as exc:
            errors[exc.code().name] += 1
        except Mismatch:
            errors["MISMATCH"] += 1
        else:
            latencies.append(time.perf_counter() - start)


async def run(
    port: int, method: str, name: str, concurrency: int, duration: float
) -> dict[str, object]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.PipelineServiceStub(channel)
        await asyncio.wait_for(channel.channel_ready(), timeout=CALL_TIMEOUT)
        if method == "PutDescription":
            calls = await _put_calls(stub, name.split(","), concurrency)
        else:
            calls = [_call(stub, method, name)] * concurrency
        for call in calls:
            await call()  # fails loudly (non-zero exit) if the subject is broken
        print("ready", flush=True)
        sys.stdin.readline()

        latencies: list[float] = []
        errors: Counter[str] = Counter()
        cpu0, start = time.process_time(), time.perf_counter()
        deadline = start + duration
        await asyncio.gather(*(_worker(call, deadline, latencies, errors) for call in calls))
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
    parser.add_argument(
        "--name", default="", help="pipeline name (GetPipeline); names, a,b,... (PutDescription)"
    )
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    result = asyncio.run(run(args.port, args.method, args.name, args.concurrency, args.duration))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
