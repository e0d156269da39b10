"""The data directory is private: 0700 directories, 0600 files, and no start in a shared one.

Tests check modes, not access: CI runs them as root, which no mode stops.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from stopcock.manager.datadir import DataDirError, prepare
from stopcock.manager.store.sqlite import SqliteStore

from tests.support import WAIT, Stack, free_port, running_stack
from tests.test_checkpoints import checkpoint, rows


def modes(root: Path) -> dict[str, int]:
    """Every entry under root (root included, as "."), by relative path: its permission bits."""
    found = {".": stat.S_IMODE(root.lstat().st_mode)}
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = Path(directory, name)
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(root: Path) -> dict[str, int]:
    found = modes(root)
    shared = {path: f"{mode:04o}" for path, mode in found.items() if mode & 0o077}
    assert not shared, f"readable or writable by others: {shared}"
    dirs = [path for path in found if (root / path).is_dir()]
    assert all(found[path] == 0o700 for path in dirs), found
    return found


@pytest.mark.e2e
def test_state_is_private(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        stack.create("p")  # storage is on by default
        stack.start("p")
        assert stack.ingest("p", rows(0, 10)).status_code == 200
        checkpoint(stack, "p")
        found = assert_private(stack.data_dir)
        # The offline CLI writes into the same database (and would tighten
        # modes itself, which is why the walk above comes first).
        minted = subprocess.run(
            [sys.executable, "-m", "stopcock.cli", "api-key", "create", "k", "--role", "read"],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        assert minted.returncode == 0, minted.stderr
        assert_private(stack.data_dir)
        pipeline = Path("pipelines", stack.get("p")["id"])
        # The walk saw every kind of state file, so the assertion above covered them.
        for expected in (
            "stopcock.db",
            "stopcock.db-wal",
            "stopcock.db-shm",
            str(pipeline / "run" / "spec.json"),
            str(pipeline / "run" / "runtime.json"),
            str(pipeline / "run" / "runtime.log"),
        ):
            assert expected in found, sorted(found)
        checkpoints = [p for p in found if p.startswith(str(pipeline / "storage"))]
        assert any(p.endswith(".sqlite") for p in checkpoints), checkpoints
        assert len(checkpoints) >= 3, checkpoints  # the directory, a file, the manifest


@pytest.mark.e2e
def test_older_state_is_made_private_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old_umask = os.umask(0o022)  # what an older Stopcock ran with
    try:
        run_dir = data / "pipelines" / "gone" / "run"
        run_dir.mkdir(parents=True)
        SqliteStore(data / "stopcock.db").close()
        (run_dir / "runtime.log").write_text("old\n")
    finally:
        os.umask(old_umask)
    (data / "elsewhere").symlink_to(tmp_path)  # a symlink: never followed, never changed
    tmp_path.chmod(0o755)
    assert modes(data)["stopcock.db"] == 0o644 and modes(data)["."] == 0o755

    stack = Stack(tmp_path)
    try:
        stack.start_manager()
        found = modes(data)
    finally:
        stack.close()
    assert found.pop("elsewhere") == 0o777  # a symlink's own mode, untouched
    shared = {path: f"{mode:04o}" for path, mode in found.items() if mode & 0o077}
    assert not shared, shared
    assert found["."] == 0o700 and found["stopcock.db"] == 0o600
    assert found["pipelines/gone/run/runtime.log"] == 0o600
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755  # outside the data directory
    assert "readable by other users" in (tmp_path / "manager.log").read_text()


@pytest.mark.e2e
@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757, 0o1777])
def test_a_data_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    data = tmp_path / "shared"
    data.mkdir()
    data.chmod(mode)
    env = {**os.environ, "STOPCOCK_DATA_DIR": str(data)}
    env.update(STOPCOCK_GRPC_PORT=str(free_port()), STOPCOCK_METRICS_PORT=str(free_port()))
    for command, exit_code in (
        (["-m", "stopcock.manager.main"], 2),
        (["-m", "stopcock.launcher"], 1),  # `make run`, `stopcock serve`
        (["-m", "stopcock.cli", "api-key", "create", "k"], 1),
    ):
        result = subprocess.run(
            [sys.executable, *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        assert result.returncode == exit_code, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert str(data) in lines[0] and f"chmod go-w {data}" in lines[0], lines[0]
        assert "Traceback" not in result.stderr
    assert list(data.iterdir()) == []  # nothing was created in it
    assert stat.S_IMODE(data.stat().st_mode) == mode  # nor was it changed


def test_prepare_creates_private_directories(tmp_path: Path) -> None:
    data = tmp_path / "a" / "b"
    old_umask = os.umask(0o077)  # as every entry point sets it
    try:
        assert prepare(data) == 0
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE(data.parent.stat().st_mode) == 0o700
    (tmp_path / "file").write_text("")
    with pytest.raises(DataDirError, match="not a directory"):
        prepare(tmp_path / "file")


@pytest.mark.e2e
def test_launcher_keeps_envoys_files_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    grpc_port, rest_port = free_port(), free_port()
    env = {
        **os.environ,
        "STOPCOCK_DATA_DIR": str(data),
        "STOPCOCK_GRPC_PORT": str(grpc_port),
        "STOPCOCK_REST_PORT": str(rest_port),
        "STOPCOCK_METRICS_PORT": str(free_port()),
    }
    with subprocess.Popen(
        [sys.executable, "-m", "stopcock.launcher"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    ) as launcher:
        assert launcher.stdout is not None
        try:
            assert "Stopcock is up" in launcher.stdout.readline()
            found = assert_private(data)
            for expected in ("envoy/envoy.yaml", "envoy/envoy.log", "stopcock.db"):
                assert expected in found, sorted(found)
            launcher.send_signal(signal.SIGINT)
            assert launcher.wait(timeout=WAIT) == 0
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(launcher.pid, signal.SIGKILL)
