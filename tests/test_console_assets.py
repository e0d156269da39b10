"""The web console's files as Envoy serves them (stopcock.console_assets, envoy/envoy.yaml)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from stopcock import console_assets, sidecar
from stopcock.console_assets import MAX_ASSET_BYTES
from stopcock.console_assets import console_assets as assets_of

from tests.support import free_port

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def console(tmp_path: Path) -> Path:
    d = tmp_path / "console"
    d.mkdir()
    (d / "index.html").write_text('<!doctype html><script type="module" src="/console/a.js">')
    (d / "a.js").write_text("export const a = 1;\n")
    (d / "a.css").write_text("body { color: black }\n")
    (d / "notes.md").write_text("not served\n")
    return d


def test_index_is_served_at_the_root_and_other_types_are_left_out(tmp_path: Path) -> None:
    found = {a.url: (a.file.name, a.content_type) for a in assets_of(console(tmp_path))}
    assert found == {
        "/": ("index.html", "text/html; charset=utf-8"),
        "/console/index.html": ("index.html", "text/html; charset=utf-8"),
        "/console/a.js": ("a.js", "text/javascript; charset=utf-8"),
        "/console/a.css": ("a.css", "text/css; charset=utf-8"),
    }
    assert assets_of(tmp_path / "missing") == []


def test_files_envoy_could_not_serve_are_refused(tmp_path: Path) -> None:
    d = console(tmp_path)
    (d / "big.js").write_bytes(b"x" * (MAX_ASSET_BYTES + 1))
    with pytest.raises(ValueError, match="over"):
        assets_of(d)
    (d / "big.js").unlink()
    (d / "a b.js").write_text("")
    with pytest.raises(ValueError, match="escaping"):
        assets_of(d)


def test_the_size_limit_agrees_with_envoy() -> None:
    text = sidecar.TEMPLATE.read_text()
    assert f"max_direct_response_body_size_bytes: {console_assets.MAX_ASSET_BYTES}\n" in text


def test_the_rendered_config_has_a_route_per_file(tmp_path: Path) -> None:
    text = sidecar.render_envoy_config(
        rest_address="127.0.0.1",
        rest_port=8080,
        grpc_port=8081,
        descriptor_path=tmp_path / "d.pb",
        lua_path=tmp_path / "s.lua",
        console_dir=console(tmp_path),
    )
    for url in ("/", "/console/index.html", "/console/a.js", "/console/a.css"):
        assert text.count(f'path: "{url}"') == 2  # GET/HEAD, then 405 for the rest
    assert "notes.md" not in text


@pytest.mark.e2e  # envoy --mode validate
def test_the_out_config_carries_the_console(tmp_path: Path) -> None:
    out = tmp_path / "deploy" / "envoy.yaml"
    assert sidecar.main(["--rest-port", "8080", "--grpc-port", "8081", "--out", str(out)]) == 0
    copied = out.parent / "console"
    for asset in assets_of(console_assets.CONSOLE_DIR):
        assert (copied / asset.file.name).read_bytes() == asset.file.read_bytes()
        assert str(copied.resolve() / asset.file.name) in out.read_text()
    sidecar.validate(out)


@pytest.mark.e2e
def test_envoy_serves_the_files_with_their_types_and_policy(tmp_path: Path) -> None:
    d = console(tmp_path)
    envoy = sidecar.EnvoySidecar(
        workdir=tmp_path / "envoy", rest_port=free_port(), grpc_port=free_port(), console_dir=d
    )
    envoy.start()
    try:
        envoy.wait_ready(30)
        with httpx.Client(base_url=f"http://127.0.0.1:{envoy.rest_port}", timeout=10) as rest:
            for path, name, kind in (
                ("/", "index.html", "text/html"),
                ("/console/a.js", "a.js", "text/javascript"),
                ("/console/a.css", "a.css", "text/css"),
            ):
                r = rest.get(path)
                assert r.status_code == 200, r.text
                assert r.content == (d / name).read_bytes()
                assert r.headers["content-type"] == f"{kind}; charset=utf-8"
                assert r.headers["content-security-policy"] == CSP
                assert r.headers["x-content-type-options"] == "nosniff"
                assert r.headers["cache-control"] == "no-cache"
            r = rest.head("/")
            assert r.status_code == 200 and r.content == b""
            r = rest.post("/", content=b"x")
            assert (r.status_code, r.headers["allow"]) == (405, "GET, HEAD")
            assert r.json()["error_code"] == "MethodNotAllowed"
            r = rest.get("/console/notes.md")
            assert r.status_code == 404
            assert r.json()["error_code"] == "UnknownEndpoint"
    finally:
        envoy.stop()
