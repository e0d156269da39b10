"""Pipeline definitions over REST through Envoy: shapes, edits, errors."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.support import PROGRAM, Stack, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.both_stores]

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
STATUS_OMITS = {
    "runtime_config",
    "program_code",
    "udf_rust",
    "udf_toml",
    "program_error",
    "program_info",
    # Feldera's selector `all` only (it is null before a deployment).
    "deployment_resources_status_details",
}


def assert_error(r: Any, status: int, code: str, details: Any = ...) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert set(body) == {"message", "error_code", "details"}, body
    assert body["error_code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    if details is not ...:
        assert body["details"] == details, body
    return body


def test_create_returns_the_full_pipeline(stack: Stack, name: str) -> None:
    r = stack.rest.post(
        "/v0/pipelines",
        json={"name": name, "program_code": PROGRAM, "description": "first", "tags": ["a"]},
    )
    assert r.status_code == 201, r.text
    p = r.json()
    uuid.UUID(p["id"])
    assert (p["name"], p["description"], p["tags"]) == (name, "first", ["a"])
    assert (p["version"], p["program_version"], p["refresh_version"]) == (1, 1, 1)
    assert all(isinstance(p[k], int) for k in ("version", "program_version", "refresh_version"))
    assert p["program_status"] == "Pending"
    assert p["deployment_status"] == p["deployment_desired_status"] == "Stopped"
    assert p["deployment_resources_status"] == p["deployment_resources_desired_status"] == "Stopped"
    for key in (
        "deployment_error",
        "deployment_id",
        "deployment_initial",
        "deployment_runtime_status",
        "deployment_runtime_desired_status",
        "deployment_runtime_status_since",
        "program_info",
        "storage_status_details",
    ):
        assert key in p and p[key] is None, key
    assert p["storage_status"] == "Cleared"
    for key in (
        "created_at",
        "program_status_since",
        "deployment_status_since",
        "deployment_desired_status_since",
        "deployment_resources_status_since",
        "deployment_resources_desired_status_since",
    ):
        assert RFC3339.match(p[key]), (key, p[key])
    assert p["runtime_config"]["fault_tolerance"] == {
        "model": "none",
        "checkpoint_interval_secs": 60,
    }
    assert p["runtime_config"]["provisioning_timeout_secs"] == 20
    assert p["program_error"] == {
        "sql_compilation": None,
        "rust_compilation": None,
        "system_error": None,
    }


def test_program_compiles_and_reports_schema(stack: Stack, name: str) -> None:
    stack.create(name)
    p = stack.get(name)
    assert p["program_status"] == "Success"
    inputs = p["program_info"]["schema"]["inputs"]
    assert [t["name"] for t in inputs] == ["t"]
    assert [c["name"] for c in inputs[0]["fields"]] == ["id", "name"]


def test_sql_error_is_reported_and_blocks_start(stack: Stack, name: str) -> None:
    r = stack.rest.post("/v0/pipelines", json={"name": name, "program_code": "CREATE TABLE ("})
    assert r.status_code == 201
    p = wait_until(lambda: (q := stack.get(name))["program_status"] == "SqlError" and q, "SqlError")
    message = p["program_error"]["sql_compilation"]["messages"][0]
    assert message["error_type"] == "Error parsing SQL"
    assert message["message"] == 'Expected table name but got "(" at line 1, column 14'
    assert_error(stack.post(name, "start"), 400, "CannotStartWithCompilationError", None)
    # Fixing the program compiles it again and bumps the versions.
    fixed = {"name": name, "program_code": PROGRAM}
    r = stack.rest.put(f"/v0/pipelines/{name}", json=fixed)
    assert r.status_code == 200, r.text
    assert (r.json()["version"], r.json()["program_version"]) == (2, 2)
    wait_until(lambda: stack.get(name)["program_status"] == "Success", "recompile")


def test_selector_status_omits_large_fields(stack: Stack, name: str) -> None:
    stack.create(name)
    full = stack.get(name, "all")
    brief = stack.get(name, "status")
    assert set(full) >= STATUS_OMITS
    assert not STATUS_OMITS & set(brief)
    assert set(full) - set(brief) == STATUS_OMITS
    assert_error(
        stack.rest.get(f"/v0/pipelines/{name}", params={"selector": "everything"}),
        400,
        "InvalidSelector",
    )


def test_list_is_an_array_with_both_selectors(stack: Stack, name: str) -> None:
    stack.create(name)
    for selector in ("all", "status"):
        r = stack.rest.get("/v0/pipelines", params={"selector": selector})
        assert r.status_code == 200
        listed = r.json()
        assert isinstance(listed, list)
        names = [p["name"] for p in listed]
        assert name in names and names == sorted(names)
        assert ("program_code" in listed[0]) == (selector == "all")


def test_unknown_pipeline_is_the_seed_body(stack: Stack) -> None:
    r = stack.rest.get("/v0/pipelines/non-existent-pipeline")
    assert r.status_code == 404
    assert r.json() == {
        "message": "Unknown pipeline name 'non-existent-pipeline'",
        "error_code": "UnknownPipelineName",
        "details": {"pipeline_name": "non-existent-pipeline"},
    }
    for action in ("start", "stop", "pause", "resume", "dismiss_error", "clear"):
        assert_error(stack.post("non-existent-pipeline", action), 404, "UnknownPipelineName")
    assert_error(
        stack.rest.delete("/v0/pipelines/non-existent-pipeline"), 404, "UnknownPipelineName"
    )


def test_duplicate_and_bad_names(stack: Stack, name: str) -> None:
    stack.create(name)
    r = stack.rest.post("/v0/pipelines", json={"name": name, "program_code": ""})
    assert_error(r, 409, "DuplicateName", None)
    cases = [("", "EmptyName"), ("x" * 64, "TooLongName"), ("bad name", "NameDoesNotMatchPattern")]
    for bad, code in cases:
        r = stack.rest.post("/v0/pipelines", json={"name": bad, "program_code": ""})
        assert_error(r, 400, code)
    body = assert_error(
        stack.rest.post("/v0/pipelines", json={"name": "x" * 64, "program_code": ""}),
        400,
        "TooLongName",
    )
    assert body["details"] == {"name": "x" * 64, "length": 64, "maximum": 63}
    listed = [p["name"] for p in stack.rest.get("/v0/pipelines").json()]
    assert "bad name" not in listed and "" not in listed


def test_invalid_configs_change_nothing(stack: Stack, name: str) -> None:
    r = stack.rest.post(
        "/v0/pipelines",
        json={"name": name, "program_code": "", "runtime_config": {"provisioning_timeout_secs": 0}},
    )
    body = assert_error(r, 400, "InvalidRuntimeConfig")
    assert body["details"]["value"] == {"provisioning_timeout_secs": 0}
    r = stack.rest.post(
        "/v0/pipelines",
        json={"name": name, "program_code": "", "program_config": {"profile": "fastest"}},
    )
    assert_error(r, 400, "InvalidProgramConfig")
    assert_error(stack.rest.get(f"/v0/pipelines/{name}"), 404, "UnknownPipelineName")


def test_missing_program_code_is_refused_on_create_and_put(stack: Stack, name: str) -> None:
    # Feldera's PostPutPipeline requires program_code ("" is an empty program).
    for r in (
        stack.rest.post("/v0/pipelines", json={"name": name}),
        stack.rest.put(f"/v0/pipelines/{name}", json={"name": name}),
    ):
        body = assert_error(r, 400, "InvalidRequest", None)
        assert "missing field `program_code`" in body["message"]
    assert_error(stack.rest.get(f"/v0/pipelines/{name}"), 404, "UnknownPipelineName")
    r = stack.rest.post("/v0/pipelines", json={"name": name, "program_code": ""})
    assert r.status_code == 201, r.text
    r = stack.rest.put(f"/v0/pipelines/{name}", json={"name": name, "description": "new"})
    assert_error(r, 400, "InvalidRequest", None)
    # The definition is untouched (its compilation goes on meanwhile, so not the whole object).
    after = stack.rest.get(f"/v0/pipelines/{name}").json()
    assert (after["version"], after["description"], after["program_code"]) == (1, "", "")


def test_felderas_tag_and_config_types_are_checked(stack: Stack, name: str) -> None:
    def post(**fields: Any) -> Any:
        return stack.rest.post("/v0/pipelines", json={"name": name, "program_code": "", **fields})

    body = assert_error(post(tags=["ok", "a,b"]), 400, "InvalidTag")
    assert body["details"]["tag"] == "a,b"
    assert body["message"].startswith("Tag 'a,b' is invalid: it may contain only ASCII letters")
    assert_error(
        post(tags=[f"t{i}" for i in range(51)]), 400, "TooManyTags", {"count": 51, "maximum": 50}
    )
    runtime_config = {"workers": 2, "resources": {"storage_mb_max": "10GB"}}
    body = assert_error(post(runtime_config=runtime_config), 400, "InvalidRuntimeConfig")
    error = 'invalid type: string "10GB", expected u64'
    assert body["details"] == {"value": runtime_config, "error": {"DeserializationFailed": error}}
    assert body["message"].endswith(f"is not valid due to: could not deserialize due to: {error}")
    body = assert_error(
        post(runtime_config={"env": {"RUST_LOG": "debug"}}), 400, "InvalidRuntimeConfig"
    )
    assert set(body["details"]["error"]) == {"InvalidPipelineEnv"}
    assert_error(post(runtime_config={"workers": 1.5}), 400, "InvalidRuntimeConfig")
    body = assert_error(post(program_config={"cache": "no"}), 400, "InvalidProgramConfig")
    assert body["details"]["error"] == {
        "DeserializationFailed": 'invalid type: string "no", expected a boolean'
    }
    assert_error(stack.rest.get(f"/v0/pipelines/{name}"), 404, "UnknownPipelineName")

    # What Feldera accepts still is: its own types, unknown keys, the legacy FT strings.
    r = post(
        tags=["env=prod", "team/data"],
        runtime_config={
            "workers": 4,
            "resources": {"storage_mb_max": 1024, "cpu_cores_max": 1.5},
            "env": {"MY_VAR": "x"},
            "fault_tolerance": "initial_state",
            "a_future_key": True,
        },
        program_config={"cache": False, "profile": "dev"},
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["runtime_config"]["resources"]["storage_mb_max"] == 1024
    assert created["runtime_config"]["fault_tolerance"]["model"] == "exactly_once"
    # A refused replace changes nothing.
    for fields in ({"tags": ["x,y"]}, {"runtime_config": {"tracing": "on"}}):
        r = stack.rest.put(
            f"/v0/pipelines/{name}", json={"name": name, "program_code": "", **fields}
        )
        assert r.status_code == 400, r.text
    after = stack.rest.get(f"/v0/pipelines/{name}").json()
    assert (after["version"], after["tags"]) == (created["version"], ["env=prod", "team/data"])


def test_put_creates_replaces_and_renames(stack: Stack, name: str) -> None:
    r = stack.rest.put(f"/v0/pipelines/{name}", json={"name": name, "program_code": PROGRAM})
    assert r.status_code == 201, r.text
    r = stack.rest.put(
        f"/v0/pipelines/{name}", json={"name": name, "program_code": PROGRAM, "description": "d"}
    )
    assert r.status_code == 200 and r.json()["description"] == "d"
    assert r.json()["version"] == 1  # a description is not program or config
    renamed = f"{name}-renamed"
    r = stack.rest.put(f"/v0/pipelines/{name}", json={"name": renamed, "program_code": PROGRAM})
    assert r.status_code == 200 and r.json()["name"] == renamed
    assert_error(stack.rest.get(f"/v0/pipelines/{name}"), 404, "UnknownPipelineName")
    r = stack.rest.put(f"/v0/pipelines/{name}", json={"name": "other", "program_code": ""})
    assert_error(r, 400, "CannotRenameNonExistingPipeline", None)


def test_edits_need_a_stopped_pipeline_and_state_bound_ones_cleared_storage(
    stack: Stack, name: str
) -> None:
    stack.create(name)
    stack.start(name)
    r = stack.rest.put(f"/v0/pipelines/{name}", json={"name": name, "program_code": ""})
    assert_error(r, 400, "UpdateRestrictedToStopped", None)
    # Metadata may change while running, and moves no version counter.
    before = stack.get(name)
    r = stack.rest.put(
        f"/v0/pipelines/{name}",
        json={"name": name, "program_code": PROGRAM, "description": "live", "tags": ["x"]},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["description"], r.json()["tags"], r.json()["version"]) == (
        "live",
        ["x"],
        before["version"],
    )
    stack.force_stop(name)
    assert stack.get(name)["storage_status"] == "InUse"
    # With storage in use: renames and state-bound configuration are refused...
    r = stack.rest.put(
        f"/v0/pipelines/{name}",
        json={"name": f"{name}-2", "program_code": PROGRAM, "runtime_config": {"workers": 2}},
    )
    assert_error(
        r,
        400,
        "EditRestrictedToClearedStorage",
        {"not_allowed": ["`name`", "`runtime_config.workers`"]},
    )
    # ... while the program may change: the next start bootstraps it.
    r = stack.rest.put(f"/v0/pipelines/{name}", json={"name": name, "program_code": PROGRAM + " "})
    assert r.status_code == 200, r.text
    assert (r.json()["version"], r.json()["program_version"]) == (
        before["version"] + 1,
        before["program_version"] + 1,
    )
