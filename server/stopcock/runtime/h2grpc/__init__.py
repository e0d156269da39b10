"""A gRPC server on asyncio and h2, for the runtime (server.py says why)."""

from stopcock.runtime.h2grpc.server import Server

__all__ = ["Server"]
