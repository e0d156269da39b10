"""The bare grpc.aio server the manager's per-request cost is compared with.

`python -m bench.bare_server --port N` serves `stopcock.v1.PipelineService`
with a servicer whose `CheckHealth` answers what the manager's does, and
nothing else: no interceptor, no logging context, no metrics, no health or
reflection service. Whatever the manager spends per CheckHealth above this
server's cost is the manager's own overhead (bench.request_cost).

What could change the cost of a call on the wire is the same as the
manager's: the generated registration (`add_PipelineServiceServicer_to_server`,
gRPC's registered-method path), the message size limit and the HTTP/2 flow
control options (stopcock.flow_control), and the default asyncio event loop.

Handshake with the parent: it prints `port N` (the bound port; `--port 0`
asks for any free one) once serving, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc
from stopcock import flow_control, limits
from stopcock.grpc_handlers import Context
from stopcock.v1 import pipeline_service_pb2 as pb
from stopcock.v1 import pipeline_service_pb2_grpc as pb_grpc


class BareServicer(pb_grpc.PipelineServiceServicer):
    """CheckHealth only; every other method stays UNIMPLEMENTED (the generated base)."""

    async def CheckHealth(
        self, request: pb.CheckHealthRequest, context: Context
    ) -> pb.CheckHealthResponse:
        return pb.CheckHealthResponse(status="healthy")


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limits.MAX_MESSAGE_BYTES),
            *flow_control.OPTIONS,
        ],
    )
    # The stubs declare every method abstract; at run time the generated base
    # answers UNIMPLEMENTED for those not overridden, which is what is wanted.
    servicer = BareServicer()  # type: ignore[abstract]
    pb_grpc.add_PipelineServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"port {bound}", flush=True)
    await stop.wait()
    await server.stop(grace=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
