"""Envoy's own answers are JSON in the contract's shape too."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import Stack, running_stack
from tests.test_rest_pipelines import assert_error

pytestmark = pytest.mark.e2e


def test_healthz(stack: Stack) -> None:
    r = stack.rest.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "healthy"})


def test_bad_query_value(stack: Stack, name: str) -> None:
    stack.create(name)
    assert_error(stack.post(name, "stop", force="maybe"), 400, "InvalidRequest")
    assert stack.get(name, "status")["deployment_status"] == "Stopped"


def test_unknown_query_parameter_is_refused(stack: Stack, name: str) -> None:
    stack.create(name)
    body = assert_error(stack.post(name, "stop", forse="true"), 400, "InvalidRequest")
    assert "forse" in body["message"]
    # A query parameter must not override a path-bound field either.
    r = stack.rest.post(f"/v0/pipelines/{name}/start", params={"name": "other"})
    assert_error(r, 400, "InvalidRequest")
    assert stack.get(name, "status")["deployment_desired_status"] == "Stopped"


def test_empty_value_of_a_parameter_with_fixed_values_is_refused(stack: Stack, name: str) -> None:
    """`?selector=` would quietly mean the default; Feldera refuses it, and so do we."""
    stack.create(name)
    for path, query in (
        ("/v0/pipelines", "selector="),
        (f"/v0/pipelines/{name}", "selector"),
        (f"/v0/pipelines/{name}/start", "initial="),
    ):
        method = "POST" if path.endswith("/start") else "GET"
        r = stack.rest.request(method, f"{path}?{query}")
        body = assert_error(r, 400, "InvalidRequest", {"parameter": query.rstrip("=")})
        assert "no value" in body["message"]
    assert stack.get(name, "status")["deployment_desired_status"] == "Stopped"
    # Other parameters may be empty: an empty incarnation_uuid is "any".
    assert (
        stack.rest.get(f"/v0/pipelines/{name}/checkpoint_status?incarnation_uuid=").status_code
        != 400
    )


def test_query_method_without_a_content_type(stack: Stack) -> None:
    """Envoy refuses it before routing, with an empty body of its own: ours has a message."""
    body = assert_error(stack.rest.request("QUERY", "/v0/pipelines"), 400, "InvalidRequest")
    assert "Content-Type" in body["message"]


def test_malformed_json_body(stack: Stack) -> None:
    r = stack.rest.post(
        "/v0/pipelines", content=b'{"name": "x", ', headers={"content-type": "application/json"}
    )
    assert_error(r, 400, "InvalidRequest")


def test_unknown_path_and_wrong_method(stack: Stack, name: str) -> None:
    assert_error(stack.rest.get("/v0/nothing-here"), 404, "UnknownEndpoint")
    assert_error(stack.rest.get("/v1/pipelines"), 404, "UnknownEndpoint")
    stack.create(name)
    assert_error(stack.rest.delete(f"/v0/pipelines/{name}/stop"), 405, "MethodNotAllowed")
    assert_error(stack.rest.get(f"/v0/pipelines/{name}/start"), 405, "MethodNotAllowed")
    assert_error(stack.rest.patch("/v0/pipelines"), 405, "MethodNotAllowed")


def test_manager_down_is_503_with_retry_after(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        stack.kill_manager()
        r = stack.rest.get("/v0/pipelines")
        assert_error(r, 503, "ManagerUnavailable")
        assert r.headers["retry-after"] == "5"
        stack.start_manager()
        assert stack.rest.get("/v0/pipelines").status_code == 200
