"""Real clients, unchanged: the `feldera` Python SDK (0.369.0) against Stopcock over REST.

Every pipeline operation here goes through the public `feldera` package only
(`FelderaClient`, `PipelineBuilder`, `Pipeline`, `feldera.rest.Pipeline`), against
a real stack (manager + Envoy + runtime processes). The module-scoped `sdk`
fixture runs the whole file twice: with authentication off, and with it on
and the SDK holding an API key minted by `stopcock api-key create`.

The SDK's own waits are bounded with `timeout_s`, every HTTP request with the
client's `timeout`, and each test by pytest-timeout.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from feldera import FelderaClient, Pipeline, PipelineBuilder
from feldera.enums import (
    CheckpointStatus,
    CompletionTokenStatus,
    DeploymentDesiredStatus,
    FaultToleranceModel,
    PipelineFieldSelector,
    PipelineStatus,
    ProgramStatus,
    StorageStatus,
)
from feldera.rest import pipeline as rest_pipeline
from feldera.rest.errors import FelderaAPIError
from feldera.runtime_config import RuntimeConfig

from tests.support import PROGRAM, Stack, running_stack, wait_until
from tests.test_state_machine import SEED_STOPPING_BODY
from tests.tokens import Tokens

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

AUTH_OFF, AUTH_ON = "auth-off", "auth-on"
MODES = [AUTH_OFF, AUTH_ON]
WAIT_S = 20.0  # the bound of every SDK wait (timeout_s); a healthy stack needs far less
PROGRAM_2 = PROGRAM + " CREATE MATERIALIZED VIEW w AS SELECT id FROM t WHERE id > 1;"


@dataclass
class Sdk:
    """A running stack and an SDK client for it, in one authentication mode."""

    mode: str
    stack: Stack
    url: str
    tokens: Tokens | None  # auth-on only: the stack's JWT issuer
    client: FelderaClient

    def connect(self, api_key: Any = None) -> FelderaClient:
        """Another client; `api_key` is a string or a callable returning one (or None)."""
        return connect(self.url, api_key)


def connect(url: str, api_key: Any = None) -> FelderaClient:
    return FelderaClient(url, api_key=api_key, timeout=WAIT_S, connection_timeout=5)


def mint_api_key(stack: Stack, key_name: str, role: str) -> str:
    """`stopcock api-key create`, straight into the stack's data directory."""
    out = subprocess.run(
        [sys.executable, "-m", "stopcock.cli", "api-key", "create", key_name, "--role", role],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = out.stdout.strip()
    assert key.startswith("apikey:"), out.stderr
    return key


@contextlib.contextmanager
def sdk_stack(root: Path, mode: str, env: dict[str, str] | None = None) -> Iterator[Sdk]:
    env = dict(env or {})
    tokens = None
    if mode == AUTH_ON:
        tokens = Tokens(root)
        env.update(tokens.env())
    with running_stack(root / "stack", env) as stack:
        key = None
        if mode == AUTH_ON:
            key = mint_api_key(stack, "sdk-tests", "write")
            # Only for the Stack helpers that read runtime.json (runtime_info).
            stack.rest.headers["authorization"] = f"Bearer {key}"
        url = f"http://127.0.0.1:{stack.rest_port}"
        yield Sdk(mode, stack, url, tokens, client=connect(url, key))


@pytest.fixture(scope="module", params=MODES)
def sdk(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sdk]:
    mode: str = request.param
    with sdk_stack(tmp_path_factory.mktemp(f"sdk-{mode}"), mode) as s:
        yield s


KILL_HOLD = "kill.hold"


def kill_hold(held: Sdk) -> Path:
    """The file whose existence holds back every kill of the `held_sdk` stack."""
    return held.stack.root.parent / KILL_HOLD


@pytest.fixture(scope="module", params=MODES)
def held_sdk(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sdk]:
    """A stack whose manager holds every kill back while `kill_hold(held_sdk)` exists."""
    mode: str = request.param
    root = tmp_path_factory.mktemp(f"held-{mode}")
    env = {"STOPCOCK_TEST_FAULTS": f"kill_hold_file={root / KILL_HOLD}"}
    with sdk_stack(root, mode, env) as s:
        yield s


# -- helpers ---------------------------------------------------------------


def api_error(
    call: Callable[[], object], status: int, code: str, details: Any = ...
) -> FelderaAPIError:
    """Runs `call`, which must fail with FelderaAPIError carrying `status` and `code`."""
    with pytest.raises(FelderaAPIError) as info:
        result = call()
        if isinstance(result, Iterator):  # the SDK's query helpers are lazy generators
            list(result)
    err: FelderaAPIError = info.value
    assert (err.status_code, err.error_code) == (status, code), str(err)
    assert isinstance(err.message, str) and err.message
    if details is not ...:
        assert err.details == details
    return err


def create(sdk: Sdk, name: str, sql: str = PROGRAM, **kwargs: Any) -> Pipeline:
    pipeline: Pipeline = PipelineBuilder(sdk.client, name, sql, **kwargs).create()
    return pipeline


def rows(pipeline: Pipeline, sql: str = "SELECT id, name FROM t ORDER BY id") -> list[Any]:
    return list(pipeline.query(sql))


def ids(pipeline: Pipeline) -> list[int]:
    return [row["id"] for row in pipeline.query("SELECT id FROM t ORDER BY id")]


def push(pipeline: Pipeline, *row_ids: int) -> str:
    token: str = pipeline.input_json("t", [{"id": i, "name": f"n{i}"} for i in row_ids])
    return token


# -- connecting ------------------------------------------------------------


def test_client_connects_with_the_modes_credentials(
    sdk: Sdk, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FELDERA_API_KEY", raising=False)
    config = sdk.client.get_config()
    assert config.version and config.edition.value == "Enterprise"
    # Enterprise: Feldera's clients enable suspend and checkpoints only then (README).
    assert config.edition.is_enterprise()
    create(sdk, name)
    if sdk.mode == AUTH_OFF:
        assert name in [p.name for p in sdk.connect().pipelines()]
        return
    assert sdk.tokens is not None
    # FelderaClient reads /config when constructed: a refused credential fails right there.
    api_error(sdk.connect, 401, "AuthenticationFailed")
    api_error(lambda: sdk.connect("apikey:" + "x" * 128), 401, "AuthenticationFailed")
    # A JWT, also given as a callable (resolved before every request), works as the key.
    tokens = sdk.tokens
    for credential in (tokens.rs256(), tokens.es256):
        assert name in [p.name for p in sdk.connect(credential).pipelines()]
    # A read key, minted through the SDK, reads but may not act.
    minted = sdk.client.create_api_key(f"{name}-reader", role="read")
    assert minted["name"] == f"{name}-reader" and minted["api_key"].startswith("apikey:")
    reader = sdk.connect(minted["api_key"])
    assert Pipeline.get(name, reader).status() == PipelineStatus.STOPPED
    api_error(
        lambda: reader.start_pipeline(name, timeout_s=WAIT_S),
        403,
        "InsufficientPermissions",
        {"required": "write", "actual": "read"},
    )


def test_sdk_finds_the_cluster_healthy(sdk: Sdk) -> None:
    """The SDK probes /v0/cluster_healthz on a 502 and retries only if `all_healthy`."""
    assert sdk.client.http._check_cluster_health() is True


def test_stats_and_the_waits_that_poll_them(sdk: Sdk, name: str) -> None:
    # (Stopped, it answers 503 PipelineInteractionNotDeployed, which the SDK
    # retries for about 15 s: tests/test_pipeline_stats.py checks that over REST.)
    p = create(sdk, name)
    p.start(timeout_s=WAIT_S)
    p.input_json("t", [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}])
    metrics = p.stats().global_metrics
    assert metrics.state == PipelineStatus.RUNNING
    assert metrics.total_processed_records == metrics.total_input_records == 2
    assert metrics.incarnation_uuid is not None and metrics.pipeline_complete is True
    # Each returns once the stats say so: all received records processed.
    p.wait_for_idle(idle_interval_s=0.2, timeout_s=WAIT_S, poll_interval_s=0.1)
    p.wait_for_completion(timeout_s=WAIT_S)
    p.stop(force=True, timeout_s=WAIT_S)


# -- definition ------------------------------------------------------------


def test_builder_creates_compiles_and_gets_with_both_selectors(sdk: Sdk, name: str) -> None:
    p = create(sdk, name, description="made by the SDK")
    assert p.name == name
    assert p.program_status() == ProgramStatus.Success
    assert p.status() == PipelineStatus.STOPPED
    assert p.storage_status() == StorageStatus.CLEARED
    assert p.deployment_error() is None
    assert p.description() == "made by the SDK"
    assert p.program_code() == PROGRAM
    assert [t.name for t in p.tables()] == ["t"]
    assert [v.name for v in p.views()] == ["v"]
    assert p.version() == 1 and p.program_version() == 1

    full = sdk.client.get_pipeline(name, PipelineFieldSelector.ALL)
    assert (full.name, full.program_code, full.program_status) == (name, PROGRAM, "Success")
    assert isinstance(full.runtime_config, dict) and full.program_info is not None
    assert [t.name for t in full.tables] == ["t"]
    status = sdk.client.get_pipeline(name, PipelineFieldSelector.STATUS)
    assert (status.name, status.program_status, status.deployment_status) == (
        name,
        "Success",
        "Stopped",
    )
    for omitted in ("program_code", "runtime_config", "program_info", "program_error"):
        assert not hasattr(status, omitted), omitted

    assert Pipeline.get(name, sdk.client).id() == full.id
    # The builder refuses a name that exists (it asks the server first).
    with pytest.raises(RuntimeError, match="already exists"):
        create(sdk, name)


def test_list_with_both_selectors(sdk: Sdk, name: str) -> None:
    names = [f"{name}-a", f"{name}-b"]
    for n in names:
        create(sdk, n)
    for selector in (PipelineFieldSelector.STATUS, PipelineFieldSelector.ALL):
        listed = {p.name: p for p in sdk.client.pipelines(selector) if p.name in names}
        assert sorted(listed) == names
        for p in listed.values():
            assert p.program_status == "Success" and p.deployment_status == "Stopped"
            if selector == PipelineFieldSelector.ALL:
                assert p.program_code == PROGRAM and [v.name for v in p.views] == ["v"]
            else:
                assert not hasattr(p, "program_code") and not hasattr(p, "runtime_config")
    assert set(names) <= {p.name for p in Pipeline.all(sdk.client)}
    assert set(names) <= {p.name for p in sdk.client.pipelines()}  # default: status


def test_create_or_replace(sdk: Sdk, name: str) -> None:
    # Absent: created (PUT, 201).
    p = PipelineBuilder(sdk.client, name, PROGRAM).create_or_replace()
    assert p.program_status() == ProgramStatus.Success and p.version() == 1
    p.start(timeout_s=WAIT_S)
    push(p, 1, 2)
    # Present and running: the SDK force-stops it, clears its storage and replaces it (200).
    p = PipelineBuilder(sdk.client, name, PROGRAM_2, description="v2").create_or_replace()
    assert p.status() == PipelineStatus.STOPPED
    assert p.storage_status() == StorageStatus.CLEARED
    assert p.program_code() == PROGRAM_2 and p.description() == "v2"
    assert sorted(v.name for v in p.views()) == ["v", "w"]
    assert p.version() > 1 and p.program_version() == 2
    p.start(timeout_s=WAIT_S)
    assert ids(p) == []  # its storage went with the old definition
    push(p, 1, 2, 3)
    assert [r["id"] for r in p.query("SELECT id FROM w ORDER BY id")] == [2, 3]


def test_sql_error_is_the_sdks_compile_error(sdk: Sdk, name: str) -> None:
    with pytest.raises(RuntimeError, match=f"Pipeline {name} failed to compile") as info:
        create(sdk, name, "CREATE TABLE t (id INTEGER NOT NULL); CREATE VIEW v AS SELEC 1;")
    # The SDK renders Feldera's message: error type, message, code snippet.
    assert 'Error parsing SQL\nEncountered "1" at line 1, column 62' in str(info.value)
    assert "Code snippet:\n    1|CREATE TABLE t" in str(info.value)
    p = Pipeline.get(name, sdk.client)
    assert p.program_status() == ProgramStatus.SqlError
    [message] = p.program_error()["sql_compilation"]["messages"]
    assert message["error_type"] == "Error parsing SQL"
    assert (message["start_line_number"], message["start_column"]) == (1, 62)
    api_error(lambda: p.start(timeout_s=WAIT_S), 400, "CannotStartWithCompilationError")
    assert p.status() == PipelineStatus.STOPPED


# -- deployment --------------------------------------------------------------


def test_start_pause_resume_and_start_paused(sdk: Sdk, name: str) -> None:
    p = create(sdk, name)
    status = sdk.client.start_pipeline(name, timeout_s=WAIT_S)
    assert status == PipelineStatus.RUNNING and p.status() == PipelineStatus.RUNNING
    assert p.deployment_desired_status() == DeploymentDesiredStatus.RUNNING
    p.start(timeout_s=WAIT_S)  # already running: a repeated start is fine

    p.pause(timeout_s=WAIT_S)
    assert p.status() == PipelineStatus.PAUSED
    assert p.deployment_desired_status() == DeploymentDesiredStatus.PAUSED
    with pytest.raises(RuntimeError, match="paused"):  # the SDK's own check
        push(p, 1)
    token = p.input_json("t", {"id": 1, "name": "forced"}, force=True)
    assert p.completion_token_status(token) == CompletionTokenStatus.COMPLETE
    assert rows(p) == [{"id": 1, "name": "forced"}]  # queries work while paused

    p.resume(timeout_s=WAIT_S)
    assert p.status() == PipelineStatus.RUNNING
    p.stop(force=True, timeout_s=WAIT_S)
    assert p.status() == PipelineStatus.STOPPED

    assert p.start_paused(timeout_s=WAIT_S) == PipelineStatus.PAUSED
    assert p.status() == PipelineStatus.PAUSED
    assert p.deployment_desired_status() == DeploymentDesiredStatus.PAUSED
    p.resume(timeout_s=WAIT_S)
    assert p.status() == PipelineStatus.RUNNING


def test_push_rows_and_query(sdk: Sdk, name: str) -> None:
    p = create(sdk, name)
    p.start(timeout_s=WAIT_S)
    client = sdk.client
    tokens = [
        p.input_json("t", {"id": 1, "name": "one"}),  # a single row: array=false
        p.input_json("t", [{"id": 2, "name": "two"}, {"id": 3, "name": "three"}]),
        client.push_to_pipeline(
            name, "t", "json", [{"id": 4, "name": "four"}], array=True, wait_timeout_s=WAIT_S
        ),
        # Newline-delimited JSON, sent as the caller wrote it.
        client.push_to_pipeline(
            name,
            "t",
            "json",
            '{"id": 5, "name": "five"}\n{"id": 6, "name": "six"}\n',
            serialize=False,
            wait_timeout_s=WAIT_S,
        ),
        client.push_to_pipeline(
            name,
            "t",
            "json",
            [{"delete": {"id": 6, "name": "six"}}, {"insert": {"id": 7, "name": "seven"}}],
            array=True,
            update_format="insert_delete",
            wait_timeout_s=WAIT_S,
        ),
        p.input_json("t", {"insert": {"id": 8, "name": None}}, update_format="insert_delete"),
    ]
    assert len(set(tokens)) == len(tokens)
    for token in tokens:
        assert client.completion_token_processed(name, token)
        assert client.completion_status(name, token)["status"] == "complete"
        assert p.completion_token_status(token) == CompletionTokenStatus.COMPLETE
        client.wait_for_token(name, token, timeout_s=WAIT_S)
    expected = [(1, "one"), (2, "two"), (3, "three"), (4, "four"), (5, "five"), (7, "seven")]
    assert rows(p) == [{"id": i, "name": n} for i, n in [*expected, (8, None)]]
    assert list(p.query("SELECT count(*) AS n FROM v WHERE name IS NOT NULL")) == [{"n": 6}]

    # A bad row rejects the whole request: nothing of it is ingested.
    api_error(
        lambda: p.input_json("t", [{"id": 9, "name": "ok"}, {"id": None, "name": "bad"}]),
        400,
        "InvalidIngressData",
    )
    api_error(lambda: p.input_json("nope", {"id": 1}), 404, "UnknownInputTable")
    assert ids(p) == [1, 2, 3, 4, 5, 7, 8]
    api_error(lambda: p.query("SELECT * FROM nope"), 400, "InvalidQuery")
    api_error(lambda: p.query("DELETE FROM t"), 400, "InvalidQuery")
    assert ids(p) == [1, 2, 3, 4, 5, 7, 8]


# feldera 0.369.0's input_pandas serializes with date_format="epoch", which pandas 3 deprecates.
@pytest.mark.filterwarnings("ignore:'epoch' date format is deprecated")
def test_formats_other_than_json_and_csv_answer_unsupported_format(
    sdk: Sdk, name: str, tmp_path: Path
) -> None:
    p = create(sdk, name)
    p.start(timeout_s=WAIT_S)
    push(p, 1)
    sql = "SELECT * FROM t"
    pandas = importlib.import_module("pandas")  # a feldera dependency without type stubs
    unsupported: dict[str, tuple[Callable[[], object], dict[str, str]]] = {
        # format=text is served (tests/test_adhoc_insert.py).
        "query_hash": (lambda: p.query_hash(sql), {"format": "hash"}),
        "query_parquet": (
            lambda: p.query_parquet(sql, str(tmp_path / "out")),
            {"format": "parquet"},
        ),
        "query_arrow": (lambda: p.query_arrow(sql), {"format": "arrow_ipc"}),
        "input_pandas": (
            lambda: p.input_pandas("t", pandas.DataFrame([{"id": 3, "name": "three"}])),
            {"json_flavor": "pandas"},
        ),
    }
    for what, (call, details) in unsupported.items():
        err = api_error(call, 400, "UnsupportedFormat", details)
        assert "json" in str(err.message), what
    assert rows(p) == [{"id": 1, "name": "n1"}]  # JSON still works, nothing else got in
    # CSV is read (tests/test_ingress_csv.py has its rules).
    sdk.client.push_to_pipeline(name, "t", "csv", "2,two\n", wait_timeout_s=WAIT_S)
    assert rows(p) == [{"id": 1, "name": "n1"}, {"id": 2, "name": "two"}]


# -- checkpoints and stops ---------------------------------------------------


def test_checkpoint_and_its_status(sdk: Sdk, name: str) -> None:
    p = create(sdk, name)
    p.start(timeout_s=WAIT_S)
    push(p, 1)
    first = p.checkpoint_response(wait=True, timeout_s=WAIT_S)
    seq, incarnation = first["checkpoint_sequence_number"], first["incarnation_uuid"]
    assert p.checkpoint_status(seq, incarnation) == CheckpointStatus.Success
    assert sdk.client.checkpoint_pipeline_status(name, incarnation) == {
        "success": seq,
        "failure": None,
    }
    second = p.checkpoint(wait=True, timeout_s=WAIT_S)
    assert second == seq + 1
    assert p.checkpoint_status(second) == CheckpointStatus.Success
    assert p.checkpoint_status(seq) == CheckpointStatus.Unknown  # superseded
    kept = p.storage_status_details()["checkpoints"]
    assert [c["sequence_number"] for c in kept][-1] == second
    assert kept[-1]["processed_records"] == 1

    p.restart(timeout_s=WAIT_S)  # force stop + start: a new runtime process
    api_error(
        lambda: sdk.client.checkpoint_pipeline_status(name, incarnation),
        400,
        "IncarnationUuidMismatch",
    )
    assert p.checkpoint(wait=True, timeout_s=WAIT_S) == 0  # numbered per process


def test_stop_without_force_keeps_every_row(sdk: Sdk, name: str) -> None:
    p = create(sdk, name)
    p.start(timeout_s=WAIT_S)
    push(p, 1, 2)
    p.checkpoint(wait=True, timeout_s=WAIT_S)
    push(p, 3)  # after the last explicit checkpoint: the suspend's own checkpoint keeps it
    p.stop(force=False, timeout_s=WAIT_S)
    assert p.status() == PipelineStatus.STOPPED
    assert p.deployment_error() is None
    assert p.storage_status() == StorageStatus.INUSE
    assert p.storage_status_details()["checkpoints"]
    p.start(timeout_s=WAIT_S)
    assert ids(p) == [1, 2, 3]
    push(p, 4)
    assert ids(p) == [1, 2, 3, 4]


def test_force_stop_returns_to_the_last_checkpoint(sdk: Sdk, name: str) -> None:
    p = create(sdk, name)
    p.start(timeout_s=WAIT_S)
    push(p, 1, 2)
    p.checkpoint(wait=True, timeout_s=WAIT_S)
    push(p, 3)
    assert ids(p) == [1, 2, 3]
    p.stop(force=True, timeout_s=WAIT_S)
    assert p.status() == PipelineStatus.STOPPED and p.deployment_error() is None
    p.start(timeout_s=WAIT_S)
    assert ids(p) == [1, 2]  # row 3 came after the last checkpoint
    push(p, 4)
    p.restart(timeout_s=WAIT_S)  # the SDK's restart is a force stop and a start
    assert ids(p) == [1, 2]


def test_dismiss_error_after_the_runtime_dies(sdk: Sdk, name: str) -> None:
    p = create(sdk, name)
    p.start(timeout_s=WAIT_S)
    first_pid = sdk.stack.runtime_info(name)["pid"]
    os.kill(first_pid, signal.SIGKILL)
    error = wait_until(p.deployment_error, "the SDK to see a deployment error")
    assert error["error_code"] == "RuntimeExitedUnexpectedly"
    assert "SIGKILL" in error["message"]
    wait_until(lambda: p.status() == PipelineStatus.STOPPED, "the pipeline to stop")
    assert p.errors() == [error]
    api_error(
        lambda: p.start(dismiss_error=False, timeout_s=WAIT_S),
        400,
        "CannotStartWithUndismissedError",
    )
    p.dismiss_error()
    assert p.deployment_error() is None and p.errors() == []
    p.start(timeout_s=WAIT_S)
    assert p.status() == PipelineStatus.RUNNING

    # Pipeline.start dismisses an error itself by default.
    pid = wait_until(
        lambda: (info := sdk.stack.runtime_info(name))["pid"] != first_pid and info["pid"],
        "the new runtime's runtime.json",
    )
    os.kill(pid, signal.SIGKILL)
    wait_until(p.deployment_error, "the second deployment error")
    wait_until(lambda: p.status() == PipelineStatus.STOPPED, "the pipeline to stop again")
    p.start(timeout_s=WAIT_S)
    assert p.status() == PipelineStatus.RUNNING and p.deployment_error() is None


def test_clear_storage_and_delete(sdk: Sdk, name: str) -> None:
    p = create(sdk, name)
    p.start(timeout_s=WAIT_S)
    push(p, 1)
    p.checkpoint(wait=True, timeout_s=WAIT_S)
    api_error(p.delete, 400, "DeleteRestrictedToFullyStopped")
    p.stop(force=True, timeout_s=WAIT_S)
    assert p.storage_status() == StorageStatus.INUSE
    api_error(p.delete, 400, "DeleteRestrictedToClearedStorage")
    p.clear_storage(timeout_s=WAIT_S)
    assert p.storage_status() == StorageStatus.CLEARED
    assert p.storage_status_details() is None
    p.start(timeout_s=WAIT_S)
    assert ids(p) == []  # a fresh start: the checkpoint went with the storage
    push(p, 2)
    p.stop(force=True, timeout_s=WAIT_S)
    p.delete(clear_storage=True)
    assert p.status() == PipelineStatus.NOT_FOUND
    api_error(lambda: Pipeline.get(name, sdk.client), 404, "UnknownPipelineName")
    assert name not in {q.name for q in sdk.client.pipelines()}


def test_modify_patches_metadata_while_running_and_the_rest_when_stopped(
    sdk: Sdk, name: str
) -> None:
    p = create(sdk, name)
    p.start(timeout_s=WAIT_S)
    version = p.version()
    p.modify(description="live", tags=["team-a", "prod"])
    assert (p.description(), sorted(p.tags())) == ("live", ["prod", "team-a"])
    api_error(lambda: p.modify(runtime_config={"workers": 2}), 400, "UpdateRestrictedToStopped")
    p.stop(force=True, timeout_s=WAIT_S)
    err = api_error(
        lambda: p.modify(runtime_config={"workers": 2}), 400, "EditRestrictedToClearedStorage"
    )
    assert err.details == {"not_allowed": ["`runtime_config.workers`"]}
    p.modify(sql=PROGRAM + " ")  # the program may change with storage in use
    assert sdk.client.get_pipeline(name, PipelineFieldSelector.ALL).program_code == PROGRAM + " "
    assert p.version() == version + 1


# -- errors ------------------------------------------------------------------


def test_errors_carry_the_contracts_code_and_status(sdk: Sdk, name: str) -> None:
    client = sdk.client
    unknown = f"{name}-missing"
    details = {"pipeline_name": unknown}
    api_error(lambda: Pipeline.get(unknown, client), 404, "UnknownPipelineName", details)
    api_error(
        lambda: client.get_pipeline(unknown, PipelineFieldSelector.STATUS),
        404,
        "UnknownPipelineName",
        details,
    )
    api_error(lambda: client.start_pipeline(unknown, timeout_s=WAIT_S), 404, "UnknownPipelineName")
    api_error(
        lambda: client.stop_pipeline(unknown, force=True, timeout_s=WAIT_S),
        404,
        "UnknownPipelineName",
    )

    err = api_error(lambda: create(sdk, "no spaces allowed"), 400, "NameDoesNotMatchPattern")
    assert err.details is not None and err.details["name"] == "no spaces allowed"
    api_error(lambda: create(sdk, "x" * 64), 400, "TooLongName")

    create(sdk, name)
    duplicate = rest_pipeline.Pipeline(name, PROGRAM, "", "", {}, {})
    api_error(lambda: client.create_pipeline(duplicate), 409, "DuplicateName", None)


def test_felderas_definition_checks_reach_the_sdk(sdk: Sdk, name: str) -> None:
    client = sdk.client
    api_error(lambda: create(sdk, name, tags=["a,b"]), 400, "InvalidTag")
    err = api_error(
        lambda: create(sdk, name, runtime_config=RuntimeConfig(workers="four")),
        400,
        "InvalidRuntimeConfig",
    )
    assert err.details is not None
    assert err.details["error"] == {
        "DeserializationFailed": 'invalid type: string "four", expected u16'
    }
    api_error(
        lambda: create(sdk, name, runtime_config=RuntimeConfig(env={"FELDERA_X": "1"})),
        400,
        "InvalidRuntimeConfig",
    )
    api_error(lambda: Pipeline.get(name, client), 404, "UnknownPipelineName")


def test_start_while_stopping_is_an_illegal_action(held_sdk: Sdk, name: str) -> None:
    hold = kill_hold(held_sdk)
    p = create(held_sdk, name)
    p.start(timeout_s=WAIT_S)
    hold.touch()  # the pipeline stays in Stopping until the file goes
    p.stop(force=True, wait=False)
    wait_until(lambda: p.status() == PipelineStatus.STOPPING, "the pipeline to be Stopping")
    err = api_error(lambda: p.start(timeout_s=WAIT_S), 400, "IllegalPipelineAction")
    # FelderaAPIError.message is the SDK's summary: the code, the server's message, details.
    assert str(SEED_STOPPING_BODY["message"]) in str(err.message)
    assert err.details == SEED_STOPPING_BODY["details"]
    api_error(lambda: p.pause(timeout_s=WAIT_S), 400, "InvalidTransition")
    hold.unlink()
    p.stop(force=True, timeout_s=WAIT_S)  # repeating a force stop is fine; it waits it out
    assert p.status() == PipelineStatus.STOPPED
    p.start(timeout_s=WAIT_S)
    assert p.status() == PipelineStatus.RUNNING


# -- the SDK's RuntimeConfig spellings ---------------------------------------------


def test_periodic_checkpoints_with_the_sdks_runtime_config(sdk: Sdk, name: str) -> None:
    config = RuntimeConfig(
        fault_tolerance_model=FaultToleranceModel.AtLeastOnce, checkpoint_interval="1s"
    )
    assert config.to_dict()["fault_tolerance"] == {
        "model": "at_least_once",
        "checkpoint_interval": "1s",
    }
    p = create(sdk, name, runtime_config=config)
    p.start(timeout_s=WAIT_S)
    push(p, 1)
    # With a 1 s interval a checkpoint comes within seconds (the default is 60 s).
    wait_until(
        lambda: (p.storage_status_details() or {}).get("checkpoints"),
        "a periodic checkpoint",
        timeout=10,
    )
