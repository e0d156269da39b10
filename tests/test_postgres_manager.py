"""The real manager on PostgreSQL (STOPCOCK_DATABASE_URL), through Envoy: a smoke test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.support import WAIT, free_port, running_stack
from tests.test_checkpoints import checkpoint

pytestmark = pytest.mark.e2e


def test_a_manager_on_postgres_keeps_pipelines_across_a_restart(
    tmp_path: Path, postgres_url: str
) -> None:
    with running_stack(tmp_path, {"STOPCOCK_DATABASE_URL": postgres_url}) as stack:
        stack.create("p")
        stack.start("p")
        assert stack.ingest("p", [{"id": 1, "name": "one"}]).status_code == 200
        assert stack.ids("p") == [1]
        checkpoint(stack, "p")  # the table's state survives a force stop
        stack.force_stop("p")
        before = stack.get("p")

        stack.kill_manager()
        stack.start_manager()

        after = stack.get("p")
        assert after["id"] == before["id"]
        assert after["deployment_status"] == "Stopped"
        assert after["storage_status"] == before["storage_status"] == "InUse"
        assert after["program_code"] == before["program_code"]
        stack.start("p")
        assert stack.ids("p") == [1]
        stack.force_stop("p")

        # The records are in PostgreSQL, not in a SQLite file of the data directory.
        assert not (stack.data_dir / "stopcock.db").exists()
        with psycopg.connect(postgres_url) as conn:
            names = [row[0] for row in conn.execute("SELECT name FROM pipelines").fetchall()]
        assert names == ["p"]


def test_an_unreachable_database_stops_the_manager_with_a_message(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "STOPCOCK_DATA_DIR": str(tmp_path / "data"),
        "STOPCOCK_GRPC_PORT": str(free_port()),
        "STOPCOCK_METRICS_PORT": str(free_port()),
        "STOPCOCK_DATABASE_URL": "postgresql://postgres@/stopcock?host=/nonexistent-dir",
    }
    done = subprocess.run(
        [sys.executable, "-m", "stopcock.manager.main"],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "cannot open the database at STOPCOCK_DATABASE_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_offline_api_key_goes_into_the_postgres_database(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {
        **os.environ,
        "STOPCOCK_DATA_DIR": str(tmp_path / "data"),
        "STOPCOCK_DATABASE_URL": postgres_url,
    }
    done = subprocess.run(
        ["stopcock", "api-key", "create", "ops", "--role", "read"],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT name, role, key_hash FROM api_keys").fetchall()
    assert [(name, role) for name, role, _ in rows] == [("ops", "read")]
    assert key not in rows[0][2]  # only a hash is stored
    assert not (tmp_path / "data" / "stopcock.db").exists()
