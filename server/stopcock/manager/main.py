"""The manager process: `python -m stopcock.manager.main`.

Serves PipelineService, gRPC health checking and reflection on
STOPCOCK_BIND_ADDRESS:STOPCOCK_GRPC_PORT. Runtime processes are left running
on shutdown (and on a crash): the next manager re-adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import sys

from stopcock.manager.app import Deps, build_server
from stopcock.manager.auth.jwt import JwtVerifier
from stopcock.manager.auth.settings import AuthConfigError, AuthSettings, require_loopback
from stopcock.manager.config import ConfigError, Settings
from stopcock.manager.control.runner import LocalProcessRunner
from stopcock.manager.datadir import prepare, private_umask
from stopcock.manager.observability import configure_logging, serve_metrics
from stopcock.manager.store import Store, StoreError
from stopcock.manager.store.sqlite import AsyncStore, claim_single_manager

log = logging.getLogger("stopcock.manager")


async def open_store(settings: Settings) -> Store:
    """PostgreSQL when STOPCOCK_DATABASE_URL is set, else SQLite in the data directory."""
    if settings.database_url is None:
        try:
            claim_single_manager(settings.data_dir)  # held until the process ends
        except StoreError as exc:
            raise ConfigError(str(exc)) from exc
        return await AsyncStore(settings.data_dir / "stopcock.db").open()
    # Imported only here: a manager on SQLite never loads the PostgreSQL driver.
    from stopcock.manager.store.postgres import PostgresStore

    try:
        return await PostgresStore(settings.database_url).open()
    except StoreError as exc:
        raise ConfigError(f"cannot open the database at STOPCOCK_DATABASE_URL: {exc}") from exc


async def serve(settings: Settings, auth: AuthSettings) -> None:
    store = await open_store(settings)
    verifier = None
    if auth.enabled:
        verifier = JwtVerifier(auth.jwks, auth.issuer, auth.audience, auth.role_claim)
        try:
            await verifier.load()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the JWKS at {auth.jwks}: {exc}") from exc
    if settings.storage_dir is not None:
        prepare(settings.storage_dir)  # private, like the data directory
    runner = LocalProcessRunner(
        settings.data_dir, storage_root=settings.storage_dir, spawner=settings.spawner
    )
    deps = Deps(store, runner, verifier)
    manager = await build_server(settings, deps)
    serve_metrics(settings.bind_address, settings.metrics_port, manager.metrics)
    log.info(
        "manager listening on %s:%d (data in %s, records in %s, authentication %s, "
        "metrics on port %d)",
        settings.bind_address,
        manager.port,
        settings.data_dir,
        "SQLite" if settings.database_url is None else "PostgreSQL",
        "on" if auth.enabled else "off",
        settings.metrics_port,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down (runtime processes keep running)")
    await manager.stop()
    await store.close()


def raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: each running pipeline holds a
    connection and a pidfd here, and a soft limit of 1,024 (a common default)
    would cap a host at a few hundred pipelines."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and wanted > soft:
        # Failing that, keep the limit we have.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main() -> None:
    raise_fd_limit()
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
