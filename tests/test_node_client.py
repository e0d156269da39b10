"""A gRPC client in another language: clients/node/lifecycle.js against a real stack.

The Node.js program loads proto/ at run time with @grpc/proto-loader (no
generated code), drives a pipeline through create, start, force-stop and get,
and checks the error model (codes, google.rpc.Status with its ErrorInfo,
x-stopcock-error). It prints one JSON line per check. Its packages are
installed by `make tools` (`npm ci` in clients/node); a missing `node` or a
missing package fails this test rather than skipping it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from tests.support import REPO, Stack

pytestmark = pytest.mark.e2e

CLIENT = REPO / "clients" / "node"
PROGRAM = CLIENT / "lifecycle.js"
CHECKS = [
    "connect",
    "create",
    "start",
    "force_stop",
    "get",
    "error_not_found",
    "error_already_exists",
    "error_unimplemented",
]
WAIT = 30  # seconds: the client's bound of each wait
RUN_TIMEOUT = 120  # seconds: the client's bound of its whole run
HARD_TIMEOUT = RUN_TIMEOUT + 30  # seconds: ours, should the client not honour its own


def node_executable() -> str:
    node = shutil.which("node")
    assert node, "node (Node.js >= 20) is not on PATH: the Node client test needs it"
    return node


def assert_packages_installed() -> None:
    """Every dependency clients/node/package.json pins is installed at that version."""
    manifest: dict[str, Any] = json.loads((CLIENT / "package.json").read_text())
    for package, pinned in manifest["dependencies"].items():
        installed = CLIENT / "node_modules" / package / "package.json"
        assert installed.is_file(), f"{package} is not installed in {CLIENT}: run `make tools`"
        version = json.loads(installed.read_text())["version"]
        assert version == pinned, f"{package} {version} installed, {pinned} pinned: `make tools`"


@pytest.mark.parametrize("through_envoy", [False, True], ids=["direct", "envoy"])
def test_node_client_lifecycle_and_errors(stack: Stack, name: str, through_envoy: bool) -> None:
    node = node_executable()
    assert_packages_installed()
    port = stack.rest_port if through_envoy else stack.grpc_port
    address = f"127.0.0.1:{port}"
    argv = [node, str(PROGRAM), address, "--name", name]
    argv += ["--wait", str(WAIT), "--timeout", str(RUN_TIMEOUT)]
    run = subprocess.run(
        argv, capture_output=True, text=True, timeout=HARD_TIMEOUT, check=False, cwd=REPO
    )
    output = f"exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert run.returncode == 0, output
    # proto-loader warns (without failing) when an import is not found.
    assert "not found in any of the include paths" not in run.stderr, output

    lines = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    checks = {line["check"]: line for line in lines if "check" in line}
    assert list(checks) == CHECKS, output
    assert all(line["ok"] is True for line in checks.values()), output
    assert lines[-1] == {"summary": True, "ok": True, "passed": len(CHECKS), "pipeline": name}

    errors = {
        "error_not_found": ("NOT_FOUND", "UnknownPipelineName"),
        "error_already_exists": ("ALREADY_EXISTS", "DuplicateName"),
        "error_unimplemented": ("UNIMPLEMENTED", "UnsupportedPipelineAction"),
    }
    for check, (code, reason) in errors.items():
        line = checks[check]
        assert (line["code"], line["reason"], line["domain"]) == (code, reason, "stopcock.dev")
    assert checks["get"]["deployment_error"] is None

    # The client really worked on this stack: Python sees what Node left.
    pipeline = stack.get(name)
    assert (pipeline["deployment_status"], pipeline["deployment_error"]) == ("Stopped", None)
    assert pipeline["id"] == checks["create"]["id"]
