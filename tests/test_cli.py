"""The `stopcock` command line, run as users run it (a subprocess) against real stacks."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support import PROGRAM, WAIT, Stack, free_port
from tests.tokens import Tokens

pytestmark = pytest.mark.e2e

LINE = re.compile(
    r"^\d\d:\d\d:\d\d\.\d{3}  (?P<status>\w+(?: → \w+)?) \(desired (?P<desired>[\w →]+)\)"
)


def cli_env(stack: Stack, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in stack.env.items() if k != "STOPCOCK_TOKEN"}
    return {**env, "STOPCOCK_ADDRESS": f"127.0.0.1:{stack.grpc_port}", **extra}


def run(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stopcock.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def ok(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    result = run(env, *args, stdin=stdin)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], exit_code: int, code: str) -> str:
    """The failure is exactly one `error: ... (<code>)` line on stderr, with `exit_code`."""
    assert result.returncode == exit_code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and lines[0].endswith(f"({code})"), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def transitions(stdout: str) -> list[str]:
    """The deployment statuses a --wait showed, in order, from its status lines."""
    statuses: list[str] = []
    for line in stdout.splitlines():
        match = LINE.match(line)
        assert match, f"not a status line: {line!r}"
        for status in match["status"].split(" → "):
            if not statuses or statuses[-1] != status:
                statuses.append(status)
    return statuses


@pytest.fixture
def env(stack: Stack) -> dict[str, str]:
    return cli_env(stack)


@contextlib.contextmanager
def manager_only(root: Path, env: dict[str, str]) -> Iterator[Stack]:
    """A stack without Envoy: the CLI speaks gRPC to the manager, and Envoy takes time."""
    stack = Stack(root, env)
    try:
        stack.start_manager()
        yield stack
    finally:
        stack.close()


def test_help_documents_the_exit_codes() -> None:
    shim = Path(sys.executable).parent / "stopcock"  # what `make venv` installs
    result = subprocess.run(
        [str(shim), "--help"], capture_output=True, text=True, timeout=WAIT, check=False
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "Exit codes: 0 success; 1 error" in text
    assert "4 --wait timed out" in text
    for command in ("serve", "apply", "list", "get", "start", "stop", "checkpoint", "logs"):
        assert command in text


def test_apply_list_get(env: dict[str, str], name: str, tmp_path: Path) -> None:
    definition = tmp_path / "pipeline.json"
    definition.write_text(
        json.dumps({"name": name, "program_code": PROGRAM, "runtime_config": {"workers": 3}})
    )
    assert f"pipeline '{name}' created" in ok(env, "apply", "-f", str(definition))
    updated = ok(env, "apply", "-f", "-", stdin=definition.read_text())
    assert f"pipeline '{name}' updated" in updated

    table = ok(env, "list").splitlines()
    assert table[0].split() == ["NAME", "STATUS", "DESIRED", "SINCE", "ERROR"]
    row = next(line.split() for line in table if line.startswith(name + " "))
    assert row[1:3] == ["Stopped", "Stopped"] and row[-1] == "-"

    as_json = json.loads(ok(env, "get", name, "-o", "json"))
    assert as_json["name"] == name and as_json["program_code"] == PROGRAM
    assert as_json["runtime_config"]["workers"] == 3  # an int, as written
    assert as_json["deployment_error"] is None
    as_yaml = yaml.safe_load(ok(env, "get", name, "-o", "yaml"))
    assert as_yaml == as_json
    summary = ok(env, "get", name)
    assert re.search(rf"^name:\s+{name}$", summary, re.M)
    assert re.search(r"^status:\s+Stopped since ", summary, re.M)

    # What `get -o json` prints can be edited and applied back.
    as_json["description"] = "edited"
    ok(env, "apply", "-f", "-", stdin=json.dumps(as_json))
    assert json.loads(ok(env, "get", name, "-o", "json"))["description"] == "edited"
    misspelt = run(env, "apply", "-f", "-", stdin=json.dumps({"name": name, "program_cod": ""}))
    assert "program_cod" in one_line_error(misspelt, 1, "InvalidRequest")
    assert json.loads(ok(env, "list", "-o", "json"))[0]["name"]


def test_start_then_stop_wait_shows_each_transition(env: dict[str, str], name: str) -> None:
    ok(env, "apply", "-f", "-", stdin=json.dumps({"name": name, "program_code": PROGRAM}))
    started = ok(env, "start", name, "--wait")
    assert transitions(started) == ["Stopped", "Provisioning", "Initializing", "Running"]
    stopped = ok(env, "stop", name, "--wait")
    lines = stopped.splitlines()
    assert LINE.match(lines[0]) and lines[0].endswith("Running (desired Suspended)"), stopped
    assert transitions(stopped) == ["Running", "Suspended", "Stopping", "Stopped"]
    assert lines[-1].endswith("Stopping → Stopped (desired Stopped)"), stopped
    assert json.loads(ok(env, "get", name, "-o", "json"))["deployment_status"] == "Stopped"
    # Stopping a stopped pipeline changes nothing and waits for nothing.
    assert transitions(ok(env, "stop", name, "--wait")) == ["Stopped"]


def test_force_stop_wait(env: dict[str, str], name: str) -> None:
    ok(env, "apply", "-f", "-", stdin=json.dumps({"name": name, "program_code": PROGRAM}))
    ok(env, "start", name, "--paused", "--wait")
    stopped = ok(env, "stop", name, "--force", "--wait")
    assert transitions(stopped) == ["Paused", "Stopping", "Stopped"]
    assert "(desired Stopped)" in stopped.splitlines()[0]


def test_failed_suspend_exits_3_with_the_error(
    stack: Stack, env: dict[str, str], name: str
) -> None:
    ok(env, "apply", "-f", "-", stdin=json.dumps({"name": name, "program_code": PROGRAM}))
    ok(env, "start", name, "--wait")
    storage = stack.storage(name)
    shutil.rmtree(storage)
    storage.write_text("not a directory")  # storage that cannot be written, even by root
    try:
        result = run(env, "stop", name, "--wait")
        line = one_line_error(result, 3, "SuspendFailed")
        assert "checkpoint could not be written" in line
        assert transitions(result.stdout)[-1] == "Stopped"
        row = next(r.split() for r in ok(env, "list").splitlines() if r.startswith(name + " "))
        assert row[-1] == "SuspendFailed"
    finally:
        storage.unlink()


def test_wait_timeout_exits_4(tmp_path: Path) -> None:
    kill_hold = tmp_path / "kill.hold"  # never removed: the pipeline stays in Stopping
    kill_hold.touch()
    with manager_only(tmp_path, {"STOPCOCK_TEST_FAULTS": f"kill_hold_file={kill_hold}"}) as stack:
        env = cli_env(stack)
        ok(env, "apply", "-f", "-", stdin=json.dumps({"name": "held", "program_code": PROGRAM}))
        ok(env, "start", "held", "--wait")
        result = run(env, "stop", "held", "--force", "--wait", "--timeout", "1")
        line = one_line_error(result, 4, "WaitTimeout")
        assert "timed out after 1s" in line and "it is Stopping" in line
        assert transitions(result.stdout)[-1] == "Stopping"


def test_errors_are_one_line(env: dict[str, str]) -> None:
    line = one_line_error(run(env, "get", "no-such-pipeline"), 1, "UnknownPipelineName")
    assert "no-such-pipeline" in line
    one_line_error(run(env, "stop", "no-such-pipeline", "--wait"), 1, "UnknownPipelineName")
    one_line_error(run(env, "get"), 2, "UsageError")  # the name is missing
    one_line_error(run(env, "apply", "-f", "/no/such/file.json"), 2, "UsageError")
    bad_json = run(env, "apply", "-f", "-", stdin='{"name": ')
    assert "not valid JSON" in one_line_error(bad_json, 1, "InvalidRequest")


def test_manager_down_is_one_line(env: dict[str, str]) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    for args in (["list"], ["stop", "p", "--wait"], ["logs", "p", "-f"]):
        result = run({**env, "STOPCOCK_ADDRESS": address}, *args)
        line = one_line_error(result, 1, "ManagerUnavailable")
        assert f"cannot reach the manager at {address}" in line
    result = run(env, "list", "--address", address)  # the option wins over the environment
    assert f"at {address}" in one_line_error(result, 1, "ManagerUnavailable")


def test_checkpoint_wait(env: dict[str, str], name: str) -> None:
    ok(env, "apply", "-f", "-", stdin=json.dumps({"name": name, "program_code": PROGRAM}))
    one_line_error(run(env, "checkpoint", name), 1, "PipelineInteractionNotDeployed")
    ok(env, "start", name, "--wait")
    first = ok(env, "checkpoint", name, "--wait")
    assert first.strip() == f"checkpoint 0 of pipeline '{name}' written"
    assert ok(env, "checkpoint", name).strip() == f"checkpoint 1 of pipeline '{name}' requested"
    assert "checkpoint 2 " in ok(env, "checkpoint", name, "--wait")
    ok(env, "stop", name, "--force", "--wait")


def test_logs_prints_and_follows_the_runtime_log(env: dict[str, str], name: str) -> None:
    ok(env, "apply", "-f", "-", stdin=json.dumps({"name": name, "program_code": PROGRAM}))
    assert ok(env, "logs", name) == ""  # never ran
    ok(env, "start", name, "--paused", "--wait")
    with subprocess.Popen(
        [sys.executable, "-m", "stopcock.cli", "logs", name, "-f"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    ) as follower:
        assert follower.stdout is not None
        try:
            followed = follower.stdout.readline()  # the follow began: it printed the log so far
            ok(env, "resume", name, "--wait")
            ok(env, "stop", name, "--force", "--wait")  # the followed log ends with the runtime
            assert follower.wait(timeout=WAIT) == 0
            followed += follower.stdout.read()  # a few lines: the pipe never filled
        finally:
            follower.kill()
    assert "status Initializing -> Paused" in followed
    assert "status Paused -> Running" in followed  # written after the follow began
    assert "status Paused -> Running" in ok(env, "logs", name)
    one_line_error(run(env, "logs", "no-such-pipeline"), 1, "UnknownPipelineName")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tokens = Tokens(tmp_path_factory.mktemp("keys"))
    with manager_only(tmp_path_factory.mktemp("secured"), tokens.env()) as stack:
        yield stack


def test_auth_with_api_keys(secured: Stack) -> None:
    env = cli_env(secured)
    # The first key is minted offline, into the data directory of the running manager.
    admin = ok(env, "api-key", "create", "admin", "--role", "write").strip()
    assert admin.startswith("apikey:")
    refused = run(env, "list")
    assert "credential" in one_line_error(refused, 1, "AuthenticationFailed")
    as_admin = cli_env(secured, STOPCOCK_TOKEN=admin)
    assert ok(as_admin, "list") == ""  # no pipelines yet ("no pipelines" goes to stderr)
    assert run(env, "list", "--token", admin).returncode == 0

    reader = ok(as_admin, "api-key", "create", "viewer", "--role", "read", "--via-server")
    as_reader = cli_env(secured, STOPCOCK_TOKEN=reader.strip())
    ok(as_reader, "list")
    denied = run(as_reader, "api-key", "create", "x", "--role", "read", "--via-server")
    one_line_error(denied, 1, "InsufficientPermissions")
    listed = ok(as_admin, "api-key", "list")
    assert [line.split()[:2] for line in listed.splitlines()[1:]] == [
        ["admin", "write"],
        ["viewer", "read"],
    ]
    assert "apikey:" not in listed
    assert [k["name"] for k in json.loads(ok(as_admin, "api-key", "list", "-o", "json"))] == [
        "admin",
        "viewer",
    ]
    ok(as_admin, "api-key", "delete", "viewer")
    one_line_error(run(as_reader, "list"), 1, "AuthenticationFailed")
    one_line_error(run(as_admin, "api-key", "delete", "viewer"), 1, "UnknownApiKey")
    duplicate = run(env, "api-key", "create", "admin", "--role", "write")
    one_line_error(duplicate, 1, "DuplicateName")


def test_serve_runs_the_manager_and_envoy(tmp_path: Path) -> None:
    grpc_port, rest_port = free_port(), free_port()
    env = {
        **os.environ,
        "STOPCOCK_DATA_DIR": str(tmp_path / "data"),
        "STOPCOCK_GRPC_PORT": str(grpc_port),
        "STOPCOCK_REST_PORT": str(rest_port),
        "STOPCOCK_METRICS_PORT": str(free_port()),
        "STOPCOCK_ADDRESS": f"127.0.0.1:{grpc_port}",
    }
    env.pop("STOPCOCK_TOKEN", None)
    log = tmp_path / "serve.log"
    with (
        log.open("w") as errors,
        subprocess.Popen(
            [sys.executable, "-m", "stopcock.cli", "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            start_new_session=True,
        ) as server,
    ):
        assert server.stdout is not None
        try:
            banner = server.stdout.readline()  # once both answer (launcher.READY_TIMEOUT)
            assert "Stopcock is up" in banner, log.read_text()
            assert ok(env, "list") == ""
            server.send_signal(signal.SIGINT)
            assert server.wait(timeout=WAIT) == 0
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
