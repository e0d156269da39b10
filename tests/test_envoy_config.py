"""The Envoy sidecar's config: rendering, Envoy's own validation, and a smoke run.

The REST behaviour through a real manager is covered by the stack tests
(test_envoy_errors, test_rest_pipelines); these need Envoy alone.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from google.protobuf import descriptor_pb2
from stopcock import sidecar

from tests.support import free_port


def render(tmp_path: Path, **overrides: Any) -> str:
    descriptor = tmp_path / "stopcock_descriptor.pb"
    sidecar.prepare_descriptor(sidecar.DESCRIPTOR, descriptor)
    args: dict[str, Any] = {
        "rest_address": "127.0.0.1",
        "rest_port": free_port(),
        "grpc_host": "127.0.0.1",
        "grpc_port": free_port(),
        "descriptor_path": descriptor,
        "lua_path": sidecar.LUA_SCRIPT,
    }
    return sidecar.render_envoy_config(**{**args, **overrides})


@pytest.mark.e2e
def test_rendered_template_passes_envoy_validation(tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text(render(tmp_path))
    assert "{{" not in config.read_text()
    assert "OK" in sidecar.validate(config)


@pytest.mark.e2e
def test_a_host_name_upstream_validates(tmp_path: Path) -> None:
    # Container deployments name the manager by its service name.
    config = tmp_path / "envoy.yaml"
    config.write_text(render(tmp_path, rest_address="0.0.0.0", grpc_host="manager"))
    sidecar.validate(config)


def test_a_placeholder_without_value_fails_rendering(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(sidecar.TEMPLATE.read_text() + "# {{ADMIN_PORT}}\n")
    with pytest.raises(ValueError, match="ADMIN_PORT"):
        render(tmp_path, template=template)


@pytest.mark.parametrize(
    "overrides",
    [{"rest_address": 'x"y'}, {"grpc_host": ""}, {"rest_port": 70000}, {"lua_path": Path("{{x}}")}],
)
def test_unusable_values_fail_rendering(tmp_path: Path, overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        render(tmp_path, **overrides)


@pytest.mark.e2e
def test_validate_reports_what_envoy_refused(tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text(render(tmp_path).replace("codec_type: AUTO", "codec_type: NOPE"))
    with pytest.raises(sidecar.SidecarError, match="NOPE"):
        sidecar.validate(config)


def test_prepared_descriptor_keeps_only_httpbody_response_bodies(tmp_path: Path) -> None:
    first, second = tmp_path / "a.pb", tmp_path / "b.pb"
    changed = sidecar.prepare_descriptor(sidecar.DESCRIPTOR, first)
    assert {name.rsplit(".", 1)[1] for name in changed} == {
        "PutPipeline",
        "PatchPipeline",
        "ListApiKeys",
        "DiffPipeline",
    }
    assert sidecar.prepare_descriptor(first, second) == []
    kept = {}
    for file in descriptor_pb2.FileDescriptorSet.FromString(second.read_bytes()).file:
        for service in file.service:
            for method in service.method:
                for option, rule in method.options.ListFields():
                    if option.full_name == "google.api.http" and rule.response_body:
                        kept[method.name] = rule.response_body
    # HttpBody fields: Envoy passes them through raw.
    assert kept == {
        "ListPipelinesJson": "body",
        "QueryPipeline": "body",
        "GetPipelineLogs": "body",
        "GetOpenApi": "body",
        "GetPipelineStats": "body",
        "ListPipelineEvents": "body",
        "GetPipelineEvent": "body",
        "ValidateProgram": "body",
    }


@pytest.mark.e2e
def test_cli_writes_a_self_contained_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "deploy" / "envoy.yaml"
    args = ["--rest-port", "8080", "--grpc-port", "50051", "--rest-address", "0.0.0.0"]
    # Beyond loopback only with authentication on.
    with pytest.raises(SystemExit):
        sidecar.main([*args, "--grpc-host", "manager", "--out", str(out)])
    assert not out.exists()
    for name, value in (
        ("STOPCOCK_AUTH", "on"),
        ("STOPCOCK_AUTH_JWKS", "/jwks.json"),
        ("STOPCOCK_AUTH_ISSUER", "i"),
        ("STOPCOCK_AUTH_AUDIENCE", "a"),
    ):
        monkeypatch.setenv(name, value)
    assert sidecar.main([*args, "--grpc-host", "manager", "--out", str(out)]) == 0
    assert (out.parent / "stopcock.lua").read_text() == sidecar.LUA_SCRIPT.read_text()
    assert str(out.parent / "stopcock_descriptor.pb") in out.read_text()
    sidecar.validate(out)


@pytest.mark.e2e
def test_sidecar_answers_json_without_a_manager(tmp_path: Path) -> None:
    envoy = sidecar.EnvoySidecar(workdir=tmp_path, rest_port=free_port(), grpc_port=free_port())
    envoy.start()
    try:
        envoy.wait_ready(30)
        with httpx.Client(base_url=f"http://127.0.0.1:{envoy.rest_port}", timeout=10) as rest:
            r = rest.get("/v0/pipelines")
            assert (r.status_code, r.headers["retry-after"]) == (503, "5")
            assert r.json()["error_code"] == "ManagerUnavailable"
            r = rest.get("/v0/nope")
            assert r.status_code == 404
            assert r.headers["content-type"] == "application/json"
            assert r.json() == {
                "message": "Unknown endpoint",
                "error_code": "UnknownEndpoint",
                "details": {"method": "GET", "path": "/v0/nope"},
            }
            r = rest.delete("/v0/pipelines/p/stop")
            assert (r.status_code, r.headers["allow"]) == (405, "POST")
            assert r.json()["error_code"] == "MethodNotAllowed"
            r = rest.get("/v0/pipelines/p", params={"name": "other"})
            assert r.status_code == 400
            assert r.json() == {
                "message": "Unknown query parameter 'name'",
                "error_code": "InvalidRequest",
                "details": {"parameter": "name"},
            }
    finally:
        envoy.stop()
    assert not envoy.running()


@pytest.mark.e2e
def test_wait_ready_fails_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        envoy = sidecar.EnvoySidecar(workdir=tmp_path, rest_port=port, grpc_port=free_port())
        envoy.start()
        try:
            with pytest.raises(sidecar.SidecarError, match="Address already in use"):
                envoy.wait_ready(30)
        finally:
            envoy.stop()


# -- replicas (README "High availability") --------------------------------

REPLICAS = [("manager-1", 50051), ("manager-2", 50051), ("127.0.0.1", 50053)]


def config_of(text: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(text)
    resources: dict[str, Any] = loaded["static_resources"]
    return resources


def manager_cluster(text: str) -> dict[str, Any]:
    (cluster,) = config_of(text)["clusters"]
    assert cluster["name"] == "stopcock_manager"
    found: dict[str, Any] = cluster
    return found


def virtual_host(text: str) -> dict[str, Any]:
    (listener,) = config_of(text)["listeners"]
    (hcm,) = listener["filter_chains"][0]["filters"]
    (host,) = hcm["typed_config"]["route_config"]["virtual_hosts"]
    found: dict[str, Any] = host
    return found


def endpoints(cluster: dict[str, Any]) -> list[tuple[str, int]]:
    (group,) = cluster["load_assignment"]["endpoints"]
    return [
        (
            e["endpoint"]["address"]["socket_address"]["address"],
            e["endpoint"]["address"]["socket_address"]["port_value"],
        )
        for e in group["lb_endpoints"]
    ]


def test_replicas_get_health_checks_balancing_and_only_safe_retries(tmp_path: Path) -> None:
    text = render(tmp_path, grpc_host=None, grpc_port=None, upstreams=REPLICAS)
    cluster = manager_cluster(text)
    assert endpoints(cluster) == REPLICAS
    assert cluster["lb_policy"] == "LEAST_REQUEST"
    # No panic mode: dead replicas are never tried because too few are healthy.
    assert cluster["common_lb_config"]["healthy_panic_threshold"] == {"value": 0}
    (check,) = cluster["health_checks"]
    assert check["grpc_health_check"] == {"service_name": ""}
    # A dead replica is skipped within a second, traffic or not.
    seconds = {
        key: float(check[key].removesuffix("s"))
        for key in ("interval", "timeout", "no_traffic_interval", "interval_jitter")
    }
    assert seconds["timeout"] <= seconds["interval"] <= 0.25
    assert seconds["no_traffic_interval"] <= 0.25
    worst = check["unhealthy_threshold"] * (seconds["interval"] + seconds["interval_jitter"])
    assert worst < 1.0
    assert check["healthy_threshold"] == 1

    policy = virtual_host(text)["retry_policy"]
    # Only requests that never reached a manager: a retried POST must not run twice.
    assert set(policy["retry_on"].split(",")) == {
        "connect-failure",
        "refused-stream",
        "reset-before-request",
    }
    assert policy["num_retries"] == len(REPLICAS) - 1
    (predicate,) = policy["retry_host_predicate"]
    assert predicate["name"] == "envoy.retry_host_predicates.previous_hosts"


def test_one_manager_renders_as_before(tmp_path: Path) -> None:
    """`make run`'s config: one endpoint, no health checks, no retries, default balancing."""
    ports = {"rest_port": 8080}
    single = render(tmp_path, grpc_host="127.0.0.1", grpc_port=50051, **ports)
    assert single == render(
        tmp_path, grpc_host=None, grpc_port=None, upstreams=[("127.0.0.1", 50051)], **ports
    )
    cluster = manager_cluster(single)
    assert endpoints(cluster) == [("127.0.0.1", 50051)]
    for key in ("lb_policy", "common_lb_config", "health_checks"):
        assert key not in cluster
    assert "retry_policy" not in virtual_host(single)
    assert not re.search(r"^\s*#\[", single, re.MULTILINE)  # no marker line left


@pytest.mark.parametrize(
    "overrides",
    [
        {"upstreams": REPLICAS},  # and grpc_host/grpc_port: which?
        {"grpc_host": None, "grpc_port": None},
        {"grpc_host": None, "grpc_port": None, "upstreams": []},
        {"grpc_host": None, "grpc_port": None, "upstreams": [("a", 1), ("a", 1)]},
        {"grpc_host": None, "grpc_port": None, "upstreams": [("a", 1), ("b", 70000)]},
        {"grpc_host": None, "grpc_port": None, "upstreams": [("a", 1), ('b"', 2)]},
    ],
)
def test_unusable_upstreams_fail_rendering(tmp_path: Path, overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        render(tmp_path, **overrides)


def test_an_unmatched_section_marker_fails_rendering(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    # The cluster's section loses its end: it would swallow what follows.
    text = sidecar.TEMPLATE.read_text()
    assert "\n    #[/replicas]\n" in text
    template.write_text(text.replace("\n    #[/replicas]\n", "\n", 1))
    with pytest.raises(ValueError, match="marker"):
        render(tmp_path, grpc_host=None, grpc_port=None, upstreams=REPLICAS, template=template)


@pytest.mark.parametrize(
    ("text", "upstream"),
    [("manager-1:50051", ("manager-1", 50051)), ("[::1]:7", ("::1", 7))],
)
def test_parse_upstream(text: str, upstream: tuple[str, int]) -> None:
    assert sidecar.parse_upstream(text) == upstream


@pytest.mark.parametrize("text", ["manager", ":50051", "manager:", "manager:http"])
def test_parse_upstream_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        sidecar.parse_upstream(text)


@pytest.mark.e2e
def test_the_replicas_config_passes_envoy_validation(tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text(render(tmp_path, grpc_host=None, grpc_port=None, upstreams=REPLICAS))
    assert "OK" in sidecar.validate(config)


@pytest.mark.e2e
def test_cli_renders_replicas_from_repeated_upstreams(tmp_path: Path) -> None:
    out = tmp_path / "deploy" / "envoy.yaml"
    args = ["--rest-port", "8080", "--out", str(out)]
    for host, port in REPLICAS:
        args += ["--upstream", f"{host}:{port}"]
    assert sidecar.main(args) == 0
    assert out.read_text() == sidecar.render_envoy_config(
        rest_address="127.0.0.1",
        rest_port=8080,
        upstreams=REPLICAS,
        descriptor_path=out.parent / "stopcock_descriptor.pb",
        lua_path=out.parent / "stopcock.lua",
        console_dir=out.parent / "console",  # the CLI copies the console's files beside it
    )
    sidecar.validate(out)
    with pytest.raises(SystemExit):  # both ways at once
        sidecar.main([*args, "--grpc-port", "50051"])
    with pytest.raises(SystemExit):  # neither
        sidecar.main(["--rest-port", "8080", "--out", str(out)])


def test_routes_that_unwrap_a_sole_field_name_messages_with_no_other_field(
    tmp_path: Path,
) -> None:
    """The Lua filter cuts a `sole_field` response's value out without parsing: sound only
    while the response message has that one field (a field added later breaks it here)."""
    from stopcock.v1 import pipeline_service_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["PipelineService"]
    config = yaml.safe_load(render(tmp_path))
    sole = {}
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for http_filter in chain["filters"]:
                route_config = http_filter["typed_config"].get("route_config", {})
                for host in route_config.get("virtual_hosts", []):
                    for route in host["routes"]:
                        lua = route.get("metadata", {}).get("filter_metadata", {})
                        meta = lua.get("envoy.filters.http.lua", {})
                        if meta.get("sole_field"):
                            sole[route["match"]["path"].rsplit("/", 1)[1]] = meta["response_body"]
    assert sole == {"ListApiKeys": "api_keys", "DiffPipeline": "diff"}
    for method, field in sole.items():
        fields = [f.name for f in service.methods_by_name[method].output_type.fields]
        assert fields == [field], method
