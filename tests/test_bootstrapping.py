"""Bootstrapping through the real `feldera` SDK, Envoy and runtime processes.

A pipeline whose program changed while its storage was in use restores its
checkpoint at the next start and bootstraps the change (runtime/bootstrap.py)
under the start's `bootstrap_policy`, as Feldera does: `allow` proceeds,
`reject` stops with BootstrapRejected, `await_approval` waits in
AwaitingApproval until POST /approve. Also the start options' errors and the
pipeline fields Feldera added with them.

The program edits with storage in use rely on the edit rules of the Round 2
contract (program fields may change while storage is InUse).
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from feldera import FelderaClient, Pipeline
from feldera.enums import BootstrapPolicy, PipelineStatus

from tests.support import Stack, running_stack, wait_until
from tests.test_bootstrap_engine import EXPECTED_DIFF, NEW, OLD

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

WAIT_S = 30.0  # the bound of every SDK wait (timeout_s)
# The programs and the diff between them are the engine tests' (tests/test_bootstrap_engine.py):
# t2 changes (it restarts empty), v2 is new; t1 and v1 are as they were.


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, FelderaClient]]:
    with running_stack(tmp_path_factory.mktemp("bootstrapping") / "stack") as stack:
        url = f"http://127.0.0.1:{stack.rest_port}"
        yield stack, FelderaClient(url, timeout=WAIT_S, connection_timeout=5)


def _error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["error_code"] == code, body
    assert set(body) == {"message", "error_code", "details"}
    return body


def _checkpointed_then_edited(stack: Stack, client: FelderaClient, name: str) -> Pipeline:
    """A pipeline of OLD with rows in t1 and t2 and a checkpoint, stopped, then given NEW."""
    stack.create(name, OLD)
    pipeline = Pipeline.get(name, client)
    pipeline.start(bootstrap_policy=BootstrapPolicy.ALLOW, timeout_s=WAIT_S)
    pipeline.input_json("t1", [{"x": 1}, {"x": 2}, {"x": 3}], wait=True)
    pipeline.input_json("t2", [{"y": 7}], wait=True)
    pipeline.checkpoint(wait=True, timeout_s=WAIT_S)
    pipeline.stop(force=True, timeout_s=WAIT_S)
    r = stack.rest.put(f"/v0/pipelines/{name}", json={"name": name, "program_code": NEW})
    assert r.status_code == 200, r.text
    wait_until(lambda: stack.get(name)["program_status"] == "Success", f"{name} to compile")
    assert stack.get(name)["storage_status"] == "InUse"
    return pipeline


def _rows(stack: Stack, name: str, sql: str) -> list[dict[str, Any]]:
    return stack.query(name, sql)


def test_new_fields_have_felderas_defaults_and_follow_the_deployment(
    env: tuple[Stack, FelderaClient], name: str
) -> None:
    stack, client = env
    stack.create(name, OLD)
    full, status = stack.get(name, "all"), stack.get(name, "status")
    for p in (full, status):
        assert (p["bootstrap_policy"], p["silent_bootstrap"], p["concurrent_bootstrap"]) == (
            None,
            False,
            False,
        )
    assert full["deployment_resources_status_details"] is None
    assert "deployment_resources_status_details" not in status  # selector `all` only
    pipeline = Pipeline.get(name, client)
    pipeline.start(timeout_s=WAIT_S)  # no policy given: Feldera's default
    assert pipeline.bootstrap_policy() == BootstrapPolicy.AWAIT_APPROVAL
    assert stack.get(name)["deployment_resources_status_details"] == {
        "process": "has not exited",
        "working_dir": "exists",
    }
    pipeline.stop(force=True, timeout_s=WAIT_S)
    assert pipeline.bootstrap_policy() is None
    assert stack.get(name)["deployment_resources_status_details"] is None


def test_bootstrap_policy_is_immutable_unless_stopped(
    env: tuple[Stack, FelderaClient], name: str
) -> None:
    stack, _ = env
    stack.create(name, OLD)
    assert stack.post(name, "start", bootstrap_policy="allow").status_code == 202
    stack.wait_status(name, "Running")
    assert stack.post(name, "start", bootstrap_policy="allow").status_code == 202
    body = _error(
        stack.post(name, "start", bootstrap_policy="reject"),
        400,
        "BootstrapPolicyImmutableUnlessStopped",
    )
    assert body["message"] == (
        "Bootstrap policy cannot be changed unless the pipeline is desired to become Stopped."
    )
    _error(
        stack.post(name, "start", bootstrap_policy="allow", silent_bootstrap="true"),
        400,
        "BootstrapPolicyImmutableUnlessStopped",
    )
    assert stack.get(name)["bootstrap_policy"] == "allow"
    stack.force_stop(name)


def test_start_options_errors(env: tuple[Stack, FelderaClient], name: str) -> None:
    stack, _ = env
    stack.create(name, OLD)
    body = _error(stack.post(name, "start", initial="standby"), 400, "InitialStandbyNotAllowed")
    assert "runtime_config.storage.backend.name" in body["message"]
    _error(stack.post(name, "start", bootstrap_policy="sometimes"), 400, "InvalidRequest")
    _error(stack.post(name, "start", bootstrap_policy=""), 400, "InvalidRequest")
    _error(
        stack.post(name, "start", silent_bootstrap="true", concurrent_bootstrap="true"),
        400,
        "InvalidBootstrapConfig",
    )
    assert stack.get(name, "status")["deployment_desired_status"] == "Stopped"


def test_approve_needs_a_deployment_and_is_a_no_op_when_nothing_awaits(
    env: tuple[Stack, FelderaClient], name: str
) -> None:
    stack, _ = env
    stack.create(name, OLD)
    _error(stack.post(name, "approve"), 503, "PipelineInteractionNotDeployed")
    _error(stack.post("no-such-pipeline-here", "approve"), 404, "UnknownPipelineName")
    stack.start(name)
    r = stack.post(name, "approve")
    assert r.status_code == 200, r.text
    assert stack.get(name, "status")["deployment_status"] == "Running"
    stack.force_stop(name)


def test_allow_keeps_unchanged_tables_and_recomputes_views(
    env: tuple[Stack, FelderaClient], name: str
) -> None:
    stack, client = env
    pipeline = _checkpointed_then_edited(stack, client, name)
    pipeline.start(bootstrap_policy=BootstrapPolicy.ALLOW, timeout_s=WAIT_S)
    assert pipeline.status() == PipelineStatus.RUNNING
    assert _rows(stack, name, "SELECT c FROM v1") == [{"c": 3}]
    assert _rows(stack, name, "SELECT s FROM v2") == [{"s": 6}]
    # The changed table restarts empty, as Feldera's bootstrap does.
    assert _rows(stack, name, "SELECT COUNT(*) AS n FROM t2") == [{"n": 0}]
    pipeline.stop(force=True, timeout_s=WAIT_S)


def test_reject_stops_with_bootstrap_rejected_and_keeps_the_checkpoint(
    env: tuple[Stack, FelderaClient], name: str
) -> None:
    stack, client = env
    pipeline = _checkpointed_then_edited(stack, client, name)
    with pytest.raises(RuntimeError):
        pipeline.start(bootstrap_policy=BootstrapPolicy.REJECT, timeout_s=WAIT_S)
    stopped = stack.wait_status(name, "Stopped")
    error = stopped["deployment_error"]
    assert error["error_code"] == "BootstrapRejected"
    assert error["details"]["approval_diff"]["program_diff"] == EXPECTED_DIFF
    assert stopped["storage_status"] == "InUse"
    # The checkpoint is intact: an allowed start bootstraps from it.
    pipeline.start(bootstrap_policy=BootstrapPolicy.ALLOW, dismiss_error=True, timeout_s=WAIT_S)
    assert _rows(stack, name, "SELECT c FROM v1") == [{"c": 3}]
    pipeline.stop(force=True, timeout_s=WAIT_S)


def test_await_approval_shows_the_diff_until_approved(
    env: tuple[Stack, FelderaClient], name: str
) -> None:
    stack, client = env
    pipeline = _checkpointed_then_edited(stack, client, name)
    pipeline.start(bootstrap_policy=BootstrapPolicy.AWAIT_APPROVAL, timeout_s=WAIT_S)
    assert pipeline.status() == PipelineStatus.AWAITINGAPPROVAL
    details = pipeline.deployment_runtime_status_details()
    assert details is not None
    assert details["approval_diff"]["program_diff"] == EXPECTED_DIFF
    # Input waits for the bootstrap, as in Feldera.
    assert stack.ingest(name, [{"x": 9}], table="t1").status_code == 503
    pipeline.approve()
    pipeline.wait_for_status(PipelineStatus.RUNNING, timeout=WAIT_S)
    assert _rows(stack, name, "SELECT s FROM v2") == [{"s": 6}]
    # No checkpoint was taken since: the next start bootstraps (and asks) again.
    pipeline.stop(force=True, timeout_s=WAIT_S)
    pipeline.start(bootstrap_policy=BootstrapPolicy.AWAIT_APPROVAL, timeout_s=WAIT_S)
    assert pipeline.status() == PipelineStatus.AWAITINGAPPROVAL
    pipeline.stop(force=True, timeout_s=WAIT_S)


def test_a_manager_restart_while_awaiting_approval_keeps_the_bootstrap_waiting(
    env: tuple[Stack, FelderaClient], name: str
) -> None:
    stack, client = env
    pipeline = _checkpointed_then_edited(stack, client, name)
    pipeline.start(bootstrap_policy=BootstrapPolicy.AWAIT_APPROVAL, timeout_s=WAIT_S)
    pid = stack.runtime_info(name)["pid"]
    stack.kill_manager()
    stack.start_manager()
    # Re-adopted, still waiting: the restart neither approves nor loses it.
    wait_until(
        lambda: stack.get(name, "status")["deployment_status"] == "AwaitingApproval",
        f"{name} to be re-adopted awaiting approval",
    )
    assert stack.runtime_info(name)["pid"] == pid
    r = stack.post(name, "approve")
    assert r.status_code == 200, r.text
    assert stack.get(name)["bootstrap_policy"] == "await_approval"
    stack.wait_status(name, "Running")
    assert _rows(stack, name, "SELECT c FROM v1") == [{"c": 3}]
    stack.force_stop(name)


def test_a_runtime_crash_while_awaiting_approval_leaves_a_restartable_pipeline(
    env: tuple[Stack, FelderaClient], name: str
) -> None:
    stack, client = env
    pipeline = _checkpointed_then_edited(stack, client, name)
    pipeline.start(bootstrap_policy=BootstrapPolicy.AWAIT_APPROVAL, timeout_s=WAIT_S)
    os.kill(stack.runtime_info(name)["pid"], signal.SIGKILL)
    stopped = stack.wait_status(name, "Stopped")
    assert stopped["deployment_error"]["error_code"] == "RuntimeExitedUnexpectedly"
    assert stopped["bootstrap_policy"] is None and stopped["storage_status"] == "InUse"
    # The checkpoint was never touched: the next start bootstraps from it.
    pipeline.start(bootstrap_policy=BootstrapPolicy.ALLOW, dismiss_error=True, timeout_s=WAIT_S)
    assert _rows(stack, name, "SELECT c FROM v1") == [{"c": 3}]
    assert _rows(stack, name, "SELECT COUNT(*) AS n FROM t2") == [{"n": 0}]
    pipeline.stop(force=True, timeout_s=WAIT_S)


def test_diff_predicts_what_a_start_bootstraps(env: tuple[Stack, FelderaClient], name: str) -> None:
    stack, client = env
    stack.create(name, OLD)
    pipeline = Pipeline.get(name, client)
    predicted = pipeline.diff(program_code=NEW)
    assert predicted["program_diff"] == EXPECTED_DIFF
    assert predicted["program_diff_error"] is None
    assert predicted["added_input_connectors"] == []
    unchanged = stack.rest.post(f"/v0/pipelines/{name}/diff", json={})
    assert unchanged.status_code == 200, unchanged.text
    assert not any(unchanged.json()["program_diff"].values())
    _error(
        stack.rest.post(f"/v0/pipelines/{name}/diff", json={"program_code": "CREATE TABLE ("}),
        400,
        "InvalidNewProgramSql",
    )
    _error(
        stack.rest.post("/v0/pipelines/no-such-pipeline-here/diff", json={}),
        404,
        "UnknownPipelineName",
    )


def test_an_approval_persisted_but_not_delivered_is_delivered_after_a_restart(
    env: tuple[Stack, FelderaClient], name: str
) -> None:
    """The manager died between persisting an approval and telling the runtime.

    Simulated by writing the approval into the stopped manager's store (what
    /approve persists before it calls the runtime): the restarted manager's
    actor finds the runtime still AwaitingApproval and delivers it.
    """
    stack, client = env
    pipeline = _checkpointed_then_edited(stack, client, name)
    pipeline.start(bootstrap_policy=BootstrapPolicy.AWAIT_APPROVAL, timeout_s=WAIT_S)
    pipeline_id = stack.get(name)["id"]
    stack.kill_manager()
    db = sqlite3.connect(stack.data_dir / "stopcock.db")
    with db:
        db.execute("UPDATE pipelines SET bootstrap_approved = 1 WHERE id = ?", (pipeline_id,))
    db.close()
    stack.start_manager()
    stack.wait_status(name, "Running")
    assert _rows(stack, name, "SELECT s FROM v2") == [{"s": 6}]
    stack.force_stop(name)


def test_a_suspend_while_awaiting_approval_stops_cleanly(
    env: tuple[Stack, FelderaClient], name: str
) -> None:
    stack, client = env
    pipeline = _checkpointed_then_edited(stack, client, name)
    pipeline.start(bootstrap_policy=BootstrapPolicy.AWAIT_APPROVAL, timeout_s=WAIT_S)
    pipeline.stop(force=False, timeout_s=WAIT_S)
    stopped = stack.get(name)
    assert stopped["deployment_status"] == "Stopped" and stopped["deployment_error"] is None
    # The checkpoint it restored stood for the suspend: the change still awaits.
    pipeline.start(bootstrap_policy=BootstrapPolicy.AWAIT_APPROVAL, timeout_s=WAIT_S)
    assert pipeline.status() == PipelineStatus.AWAITINGAPPROVAL
    pipeline.stop(force=True, timeout_s=WAIT_S)


def test_a_new_view_over_a_non_materialized_table_is_not_bootstrapped(
    env: tuple[Stack, FelderaClient], name: str
) -> None:
    stack, client = env
    plain = (
        "CREATE TABLE t1 (x INTEGER); CREATE MATERIALIZED VIEW v1 AS SELECT COUNT(*) AS c FROM t1;"
    )
    stack.create(name, plain)
    pipeline = Pipeline.get(name, client)
    pipeline.start(bootstrap_policy=BootstrapPolicy.ALLOW, timeout_s=WAIT_S)
    pipeline.execute("INSERT INTO t1 VALUES (1), (2);", wait=True)
    pipeline.checkpoint(wait=True, timeout_s=WAIT_S)
    pipeline.stop(force=True, timeout_s=WAIT_S)
    pipeline.modify(sql=plain + " CREATE MATERIALIZED VIEW v2 AS SELECT MAX(x) AS m FROM t1;")
    wait_until(lambda: stack.get(name)["program_status"] == "Success", f"{name} to compile")
    with pytest.raises(RuntimeError):
        pipeline.start(bootstrap_policy=BootstrapPolicy.ALLOW, timeout_s=WAIT_S)
    error = stack.wait_status(name, "Stopped")["deployment_error"]
    assert error["error_code"] == "BootstrapNotAllowed"
    assert "not materialized" in error["message"] and "'t1'" in error["message"]
    assert stack.get(name)["storage_status"] == "InUse"  # the checkpoint is kept
