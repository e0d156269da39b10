"""Authentication and authorization: the same answers over REST and gRPC."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from stopcock.v1 import pipeline_service_pb2 as pb

from tests.support import PROGRAM, WAIT, Stack, running_stack
from tests.test_rest_pipelines import assert_error
from tests.tokens import Tokens

pytestmark = pytest.mark.e2e

Headers = dict[str, str]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Tokens:
    return Tokens(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, tokens: Tokens) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("secured"), tokens.env()) as stack:
        yield stack


@pytest.fixture(scope="module")
def keys(secured: Stack, tokens: Tokens) -> dict[str, str]:
    """A write key and a read key, minted through the API with a JWT."""
    admin = {"authorization": f"Bearer {tokens.rs256()}"}
    minted = {}
    for role in ("write", "read"):
        r = secured.rest.post(
            "/v0/api_keys", json={"name": f"k-{role}", "role": role}, headers=admin
        )
        assert r.status_code == 201, r.text
        minted[role] = r.json()["api_key"]
        tokens.issued.append(minted[role])
    return minted


def bearer(token: str) -> Headers:
    return {"authorization": f"Bearer {token}"}


def rest_get(stack: Stack, headers: Headers) -> Any:
    return stack.rest.get("/v0/pipelines", headers=headers)


def grpc_call(stack: Stack, headers: Headers) -> grpc.StatusCode:
    try:
        stack.stub.ListPipelines(pb.ListPipelinesRequest(), metadata=tuple(headers.items()))
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


REFUSED: dict[str, Callable[[Tokens], Headers]] = {
    "no header": lambda t: {},
    "basic scheme": lambda t: {"authorization": "Basic dXNlcjpwYXNz"},
    "empty bearer": lambda t: {"authorization": "Bearer"},
    "alg none": lambda t: bearer(t.alg_none()),
    "hs256 with the public key": lambda t: bearer(t.hs256_with_public_key()),
    "expired": lambda t: bearer(t.rs256(exp=int(time.time()) - 3600)),
    "nbf in the future": lambda t: bearer(t.rs256(nbf=int(time.time()) + 3600)),
    "wrong issuer": lambda t: bearer(t.rs256(iss="https://evil.test")),
    "wrong audience": lambda t: bearer(t.rs256(aud="someone-else")),
    "no exp": lambda t: bearer(t.rs256(exp=None)),
    "unknown kid": lambda t: bearer(t.rs256(kid="rotated-away")),
    "tampered payload": lambda t: bearer(t.tampered()),
    "garbage": lambda t: bearer("not.a.jwt"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_credentials(secured: Stack, tokens: Tokens, case: str) -> None:
    headers = REFUSED[case](tokens)
    r = rest_get(secured, headers)
    body = assert_error(r, 401, "AuthenticationFailed")
    assert set(body["details"]) == {"reason"}
    assert r.headers["www-authenticate"].startswith("Bearer")
    for header in headers.values():
        token = header.partition(" ")[2]
        assert not token or token not in r.text  # never echoed
    assert grpc_call(secured, headers) == grpc.StatusCode.UNAUTHENTICATED


def test_deleted_and_altered_api_keys_are_refused(secured: Stack, tokens: Tokens) -> None:
    admin = bearer(tokens.es256())
    r = secured.rest.post(
        "/v0/api_keys", json={"name": "short-lived", "role": "write"}, headers=admin
    )
    key = r.json()["api_key"]
    tokens.issued.append(key)
    assert rest_get(secured, bearer(key)).status_code == 200
    altered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert_error(rest_get(secured, bearer(altered)), 401, "AuthenticationFailed")
    assert grpc_call(secured, bearer(altered)) == grpc.StatusCode.UNAUTHENTICATED
    assert secured.rest.delete("/v0/api_keys/short-lived", headers=admin).status_code == 200
    assert_error(rest_get(secured, bearer(key)), 401, "AuthenticationFailed")
    assert grpc_call(secured, bearer(key)) == grpc.StatusCode.UNAUTHENTICATED


def test_accepted_credentials(secured: Stack, tokens: Tokens, keys: dict[str, str]) -> None:
    for headers in (
        bearer(tokens.rs256()),
        bearer(tokens.es256()),
        bearer(keys["write"]),
        bearer(keys["read"]),
    ):
        assert rest_get(secured, headers).status_code == 200
        assert grpc_call(secured, headers) == grpc.StatusCode.OK


def test_roles(secured: Stack, tokens: Tokens, keys: dict[str, str]) -> None:
    write, read = bearer(keys["write"]), bearer(keys["read"])
    r = secured.rest.post(
        "/v0/pipelines", json={"name": "authz", "program_code": PROGRAM}, headers=write
    )
    assert r.status_code == 201, r.text
    assert secured.rest.get("/v0/pipelines/authz", headers=read).status_code == 200
    r = secured.rest.post("/v0/pipelines/authz/start", headers=read)
    assert_error(r, 403, "InsufficientPermissions", {"required": "write", "actual": "read"})
    with pytest.raises(grpc.RpcError) as info:
        secured.stub.StartPipeline(
            pb.StartPipelineRequest(name="authz"), metadata=tuple(read.items())
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A JWT without a role may do nothing (see stopcock.manager.auth.authenticator).
    roleless = bearer(tokens.rs256(stopcock_role=None))
    assert_error(
        rest_get(secured, roleless),
        403,
        "InsufficientPermissions",
        {"required": "read", "actual": "none"},
    )
    assert bearer(tokens.rs256(stopcock_role="read"))  # a read JWT reads
    assert rest_get(secured, bearer(tokens.rs256(stopcock_role="read"))).status_code == 200
    # Cluster health needs a credential with the read role, as in Feldera's rbac.rs.
    assert_error(secured.rest.get("/v0/cluster_healthz"), 401, "AuthenticationFailed")
    assert secured.rest.get("/v0/cluster_healthz", headers=read).json()["all_healthy"] is True
    # Key management needs write; the listing never shows a key.
    assert_error(secured.rest.get("/v0/api_keys", headers=read), 403, "InsufficientPermissions")
    listed = secured.rest.get("/v0/api_keys", headers=write).json()
    roles = {k["name"]: k["role"] for k in listed}
    assert (roles["k-write"], roles["k-read"]) == ("write", "read")
    assert all(set(k) == {"id", "name", "role", "created_at"} for k in listed)


def test_whoami_names_the_credentials_role(
    secured: Stack, tokens: Tokens, keys: dict[str, str]
) -> None:
    for headers, role in (
        (bearer(keys["write"]), "write"),
        (bearer(keys["read"]), "read"),
        (bearer(tokens.rs256(stopcock_role="read")), "read"),
    ):
        r = secured.rest.get("/v0/whoami", headers=headers)
        assert r.status_code == 200, r.text
        assert r.json() == {"role": role, "authentication": True}
    r = secured.rest.get("/v0/whoami")
    assert_error(r, 401, "AuthenticationFailed")
    assert r.headers["www-authenticate"].startswith("Bearer")
    reply = secured.stub.GetCaller(
        pb.GetCallerRequest(), metadata=(("authorization", "Bearer " + keys["read"]),)
    )
    assert (reply.role, reply.authentication) == ("read", True)
    # A read key follows the list stream (the console's list).
    with secured.rest.stream("GET", "/v0/watch", headers=bearer(keys["read"])) as r:
        assert r.status_code == 200
        assert any(line == '{"synced":true}' for line in r.iter_lines())


def test_open_endpoints(secured: Stack) -> None:
    assert secured.rest.get("/healthz").json() == {"status": "healthy"}
    assert secured.stub.CheckHealth(pb.CheckHealthRequest()).status == "healthy"
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(secured.channel)
    assert health.Check(health_pb2.HealthCheckRequest()).status == 1


def test_api_keys_minted_offline_work_on_their_first_use(secured: Stack, tokens: Tokens) -> None:
    """Each key works the moment `stopcock api-key create` has written it, however
    many unknown keys were presented meanwhile (they once rate-limited the reload
    that finds new keys, and a fresh key was refused for up to a second)."""
    unknown = bearer("apikey:" + "0" * 128)
    minted: list[str] = []
    for i in range(20):
        cli = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stopcock.cli",
                "api-key",
                "create",
                f"fresh-{i}",
                "--role",
                "write",
            ],
            env=secured.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + WAIT
        while True:  # unknown keys, while the CLI writes the new one
            assert time.monotonic() < deadline, "the CLI did not finish"
            assert rest_get(secured, unknown).status_code == 401
            try:
                out, err = cli.communicate(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                continue
        assert cli.returncode == 0, err
        key = out.strip()
        tokens.issued.append(key)
        minted.append(key)
        assert key.startswith("apikey:") and len(key) == len("apikey:") + 128
        assert key[7:].isalnum() and key[7:].isascii()
        # First use over gRPC on even rounds, over REST (Envoy) on odd ones.
        if i % 2 == 0:
            assert grpc_call(secured, bearer(key)) == grpc.StatusCode.OK
        r = rest_get(secured, bearer(key))
        assert r.status_code == 200, (i, r.text)
        assert grpc_call(secured, bearer(key)) == grpc.StatusCode.OK
    # A key found that way is deleted like any other: refused at once.
    r = secured.rest.delete("/v0/api_keys/fresh-0", headers=bearer(minted[-1]))
    assert r.status_code == 200, r.text
    first = bearer(minted[0])
    assert_error(rest_get(secured, first), 401, "AuthenticationFailed")
    assert grpc_call(secured, first) == grpc.StatusCode.UNAUTHENTICATED


def test_no_credential_in_any_log(secured: Stack, tokens: Tokens, keys: dict[str, str]) -> None:
    # Runs last in this module (alphabetically after the others' fixtures were used):
    # every credential issued above has been sent through Envoy and gRPC by now.
    assert rest_get(secured, bearer(keys["write"])).status_code == 200
    logs = [p for p in secured.root.rglob("*.log") if p.is_file()]
    assert logs
    text = "\n".join(p.read_text(errors="replace") for p in logs)
    for credential in tokens.issued:
        assert credential not in text
        assert credential[-40:] not in text  # not even a part of it
    assert "Bearer " not in text and "authorization:" not in text.lower()


def test_auth_needs_its_settings_and_loopback_needs_auth(tmp_path: Path) -> None:
    import os

    base = {**os.environ, "STOPCOCK_DATA_DIR": str(tmp_path)}
    bad = [
        ({"STOPCOCK_AUTH": "on"}, "STOPCOCK_AUTH_JWKS"),
        ({"STOPCOCK_AUTH": "maybe"}, "STOPCOCK_AUTH must be"),
        ({"STOPCOCK_BIND_ADDRESS": "0.0.0.0"}, "authentication off"),
    ]
    for env, message in bad:
        result = subprocess.run(
            [sys.executable, "-m", "stopcock.manager.main"],
            env={**base, **env},
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert message in result.stderr
        result = subprocess.run(
            [sys.executable, "-m", "stopcock.launcher"],
            env={**base, **env},
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0 and message in result.stderr
