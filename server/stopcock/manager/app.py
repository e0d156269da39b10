"""The composition root: every part of a manager built and wired, in one place.

`build_server(settings, deps)` returns a started gRPC server and the
port it bound, over what `deps` provides (an open store, a runner, a loaded
JWT verifier when authentication is on). Nothing here is global, so a test
may build several managers in one process; `main` builds the production
one from the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry
from stopcock import flow_control, limits
from stopcock.manager.api.auth_interceptor import AuthInterceptor
from stopcock.manager.api.servicer import PipelineServicer
from stopcock.manager.auth.api_keys import ApiKeys
from stopcock.manager.auth.authenticator import Authenticator
from stopcock.manager.auth.jwt import JwtVerifier
from stopcock.manager.config import Settings
from stopcock.manager.control.lifecycle import Lifecycle
from stopcock.manager.control.records import Records
from stopcock.manager.control.replica import Replica
from stopcock.manager.control.runner import LocalProcessRunner
from stopcock.manager.control.shared_records import SharedRecords
from stopcock.manager.idle_gc import IdleCollector
from stopcock.manager.observability import RequestInterceptor, manager_registry
from stopcock.manager.store import SharedStore, Store
from stopcock.v1 import pipeline_service_pb2 as pb
from stopcock.v1 import pipeline_service_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PipelineService"].full_name


@dataclass(frozen=True, slots=True)
class Deps:
    """What a manager is built over: made (and closed) by its caller."""

    store: Store  # open
    runner: LocalProcessRunner
    verifier: JwtVerifier | None  # loaded; None with authentication off


@dataclass(frozen=True, slots=True)
class Manager:
    server: grpc.aio.Server
    port: int  # the bound gRPC port (settings may ask for 0: any free port)
    lifecycle: Lifecycle
    health: Any  # grpc_health's asyncio HealthServicer (untyped)
    metrics: CollectorRegistry
    idle_gc: IdleCollector

    async def stop(self, grace: float = 2.0) -> None:
        """Stops serving; runtime processes keep running (the next manager re-adopts them)."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace=grace)
        await self.idle_gc.stop()
        await self.lifecycle.close()


def _lifecycle(settings: Settings, deps: Deps) -> Lifecycle:
    """The sole manager over SQLite; over PostgreSQL, a replica among others."""
    if not deps.store.shared:
        return Lifecycle(Records(deps.store), deps.runner)
    shared = cast(SharedStore, deps.store)
    records = SharedRecords(shared)
    return Lifecycle(records, deps.runner, Replica(shared, records, settings.lease_ttl_secs))


async def build_server(settings: Settings, deps: Deps) -> Manager:
    api_keys = ApiKeys(deps.store)
    await api_keys.load()
    requests = RequestInterceptor()
    interceptors: list[grpc.aio.ServerInterceptor[Any, Any]] = [requests]
    authenticator = None
    if deps.verifier is not None:
        authenticator = Authenticator(api_keys, deps.verifier)
        interceptors.append(AuthInterceptor(authenticator))
    lifecycle = _lifecycle(settings, deps)
    await lifecycle.open()

    server = grpc.aio.server(
        interceptors=interceptors,
        # gRPC's default (4 MiB) would refuse programs long before the REST
        # face's own limit; see stopcock.limits. Sending is not limited.
        options=[
            ("grpc.max_receive_message_length", limits.MAX_MESSAGE_BYTES),
            ("grpc.max_metadata_size", limits.MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", limits.MAX_METADATA_BYTES),
            *flow_control.OPTIONS,
        ],
    )
    pb_grpc.add_PipelineServiceServicer_to_server(
        PipelineServicer(lifecycle, api_keys, authenticator), server
    )
    # grpc_health exposes its asyncio servicer as `health.aio` (untyped).
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(f"{settings.bind_address}:{settings.grpc_port}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    idle_gc = IdleCollector(lambda: requests.calls)
    idle_gc.start()
    registry = manager_registry(lifecycle.statuses)
    return Manager(server, port, lifecycle, health_servicer, registry, idle_gc)
