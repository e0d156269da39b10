"""The manager process: `python -m stopcock.manager.main`.

Serves PipelineService, gRPC health checking and reflection on
STOPCOCK_BIND_ADDRESS:STOPCOCK_GRPC_PORT. Runtime processes are left running
on shutdown (and on a crash): the next manager re-adopts them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from stopcock import flow_control, limits
from stopcock.manager.api.auth_interceptor import AuthInterceptor
from stopcock.manager.api.servicer import PipelineServicer
from stopcock.manager.auth.api_keys import ApiKeys
from stopcock.manager.auth.authenticator import Authenticator
from stopcock.manager.auth.jwt import JwtVerifier
from stopcock.manager.auth.settings import AuthConfigError, AuthSettings, require_loopback
from stopcock.manager.config import ConfigError, Settings
from stopcock.manager.control.lifecycle import Lifecycle
from stopcock.manager.control.runner import LocalProcessRunner
from stopcock.manager.datadir import prepare, private_umask
from stopcock.manager.observability import RequestInterceptor, configure_logging, serve_metrics
from stopcock.manager.store.sqlite import AsyncStore
from stopcock.v1 import pipeline_service_pb2 as pb
from stopcock.v1 import pipeline_service_pb2_grpc as pb_grpc

log = logging.getLogger("stopcock.manager")


async def serve(settings: Settings, auth: AuthSettings) -> None:
    store = await AsyncStore(settings.data_dir / "stopcock.db").open()
    api_keys = ApiKeys(store)
    await api_keys.load()
    interceptors: list[grpc.aio.ServerInterceptor[Any, Any]] = [RequestInterceptor()]
    if auth.enabled:
        verifier = JwtVerifier(auth.jwks, auth.issuer, auth.audience, auth.role_claim)
        try:
            await verifier.load()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the JWKS at {auth.jwks}: {exc}") from exc
        interceptors.append(AuthInterceptor(Authenticator(api_keys, verifier)))
    lifecycle = Lifecycle(store, LocalProcessRunner(settings.data_dir))
    await lifecycle.open()
    serve_metrics(settings.bind_address, settings.metrics_port, lifecycle.statuses)

    server = grpc.aio.server(
        interceptors=interceptors,
        # gRPC's default (4 MiB) would refuse programs long before the REST
        # face's own limit; see stopcock.limits. Sending is not limited.
        options=[
            ("grpc.max_receive_message_length", limits.MAX_MESSAGE_BYTES),
            *flow_control.OPTIONS,
        ],
    )
    pb_grpc.add_PipelineServiceServicer_to_server(PipelineServicer(lifecycle, api_keys), server)
    # grpc_health exposes its asyncio servicer as `health.aio` (untyped).
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_name = pb.DESCRIPTOR.services_by_name["PipelineService"].full_name
    reflection.enable_server_reflection(
        (service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.bind_address}:{settings.grpc_port}"
    server.add_insecure_port(address)
    await server.start()
    for name in ("", service_name):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "manager listening on %s (data in %s, authentication %s, metrics on port %d)",
        address,
        settings.data_dir,
        "on" if auth.enabled else "off",
        settings.metrics_port,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down (runtime processes keep running)")
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=2)
    await lifecycle.close()
    await store.close()


def main() -> None:
    # Before anything is created: the database, its WAL, run directories and
    # logs are private, and runtime processes inherit this umask.
    private_umask()
    try:
        settings = Settings.from_env()
        auth = AuthSettings.from_env()
        require_loopback(auth, settings.bind_address, "gRPC API (manager)")
    except (ConfigError, AuthConfigError) as exc:
        print(f"stopcock: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings.log_level)
    try:
        prepare(settings.data_dir)  # logs what it tightened, hence after configure_logging
        asyncio.run(serve(settings, auth))
    except ConfigError as exc:
        print(f"stopcock: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
