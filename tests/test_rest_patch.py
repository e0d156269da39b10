"""PATCH /v0/pipelines/{name} through Envoy: Feldera's partial update.

Each field present replaces the stored one; absent (or null) fields keep
theirs. Description and tags are client metadata: they may change at any
time and move no version counter, refresh_version included.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import PROGRAM, Stack, wait_until
from tests.test_rest_pipelines import assert_error

pytestmark = [pytest.mark.e2e, pytest.mark.both_stores]


def counters(p: dict[str, Any]) -> tuple[int, int, int]:
    return p["version"], p["program_version"], p["refresh_version"]


def compiled(stack: Stack, name: str) -> dict[str, Any]:
    return wait_until(
        lambda: (p := stack.get(name, "status"))["program_status"] == "Success" and p,
        f"{name} compiled",
    )


def patch(stack: Stack, name: str, body: dict[str, Any]) -> Any:
    return stack.rest.patch(f"/v0/pipelines/{name}", json=body)


def test_patch_changes_only_the_fields_present(stack: Stack, name: str) -> None:
    r = stack.rest.post(
        "/v0/pipelines",
        json={"name": name, "program_code": PROGRAM, "description": "d", "tags": ["a", "b"]},
    )
    assert r.status_code == 201, r.text
    base = counters(compiled(stack, name))

    r = patch(stack, name, {"tags": ["c"]})
    assert r.status_code == 200, r.text
    assert (r.json()["tags"], r.json()["description"]) == (["c"], "d")
    # The SDK sends every field, absent ones as null: null keeps the value.
    r = patch(stack, name, {"description": "e", "tags": None, "program_code": None})
    assert r.status_code == 200, r.text
    assert (r.json()["tags"], r.json()["description"], r.json()["program_code"]) == (
        ["c"],
        "e",
        PROGRAM,
    )
    r = patch(stack, name, {"tags": []})
    assert r.status_code == 200 and r.json()["tags"] == []
    assert counters(stack.get(name, "status")) == base  # metadata moves no counter
    assert stack.get(name)["tags"] == []  # and a full read is not served stale

    r = patch(stack, name, {"runtime_config": {"workers": 3}})
    assert r.status_code == 200, r.text
    cfg = r.json()["runtime_config"]
    assert cfg["workers"] == 3 and cfg["provisioning_timeout_secs"] == 20  # replaced, defaults
    assert counters(r.json()) == (base[0] + 1, base[1], base[2] + 1)

    r = patch(stack, name, {"program_code": "CREATE TABLE t2 (x INTEGER);"})
    assert r.status_code == 200, r.text
    assert r.json()["program_status"] == "Pending"
    assert counters(r.json())[:2] == (base[0] + 2, base[1] + 1)


def test_patch_refusals_change_nothing(stack: Stack, name: str) -> None:
    stack.create(name)
    before = stack.get(name)
    assert_error(patch(stack, name, {"tags": ["a,b"]}), 400, "InvalidTag")
    assert_error(patch(stack, name, {"tags": [1]}), 400, "InvalidRequest")
    assert_error(patch(stack, name, {"name": "no spaces"}), 400, "NameDoesNotMatchPattern")
    r = patch(stack, name, {"runtime_config": {"workers": "many"}})
    assert_error(r, 400, "InvalidRuntimeConfig")
    assert_error(patch(stack, name, {"program_config": {"cache": 3}}), 400, "InvalidProgramConfig")
    assert_error(patch(stack, f"{name}-none", {}), 404, "UnknownPipelineName")
    # No body at all is refused ({} is a valid no-op patch).
    assert_error(stack.rest.patch(f"/v0/pipelines/{name}"), 400, "InvalidRequest")
    assert patch(stack, name, {}).status_code == 200
    other = f"{name}-other"
    stack.create(other)
    assert_error(patch(stack, name, {"name": other}), 409, "DuplicateName")
    assert stack.get(name) == before


def test_patch_rules_follow_the_deployment_and_storage(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    r = patch(stack, name, {"description": "running", "tags": ["live"]})
    assert r.status_code == 200 and r.json()["description"] == "running"
    assert_error(
        patch(stack, name, {"program_code": PROGRAM + " "}), 400, "UpdateRestrictedToStopped", None
    )
    stack.force_stop(name)
    assert stack.get(name)["storage_status"] == "InUse"
    r = patch(
        stack,
        name,
        {
            "name": f"{name}-renamed",
            "runtime_config": {
                "workers": 2,
                "fault_tolerance": {"model": "at_least_once"},
                "resources": {"storage_class": "fast"},
            },
        },
    )
    assert_error(
        r,
        400,
        "EditRestrictedToClearedStorage",
        {
            "not_allowed": [
                "`name`",
                "`runtime_config.workers`",
                "`runtime_config.fault_tolerance`",
                "`runtime_config.resources.storage_class`",
            ]
        },
    )
    # Configuration the state does not depend on, and the program, may change.
    r = patch(stack, name, {"runtime_config": {"provisioning_timeout_secs": 30}})
    assert r.status_code == 200, r.text
    r = patch(stack, name, {"program_code": PROGRAM + " "})
    assert r.status_code == 200 and r.json()["program_version"] == 2
    stack.rest.post(f"/v0/pipelines/{name}/clear")
    wait_until(lambda: stack.get(name, "status")["storage_status"] == "Cleared", "cleared")
    r = patch(stack, name, {"name": f"{name}-renamed", "runtime_config": {"workers": 2}})
    assert r.status_code == 200 and r.json()["name"] == f"{name}-renamed"
