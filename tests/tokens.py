"""Test credentials: real RSA/EC keys, a JWKS file, and tokens good and bad."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://issuer.test"
AUDIENCE = "stopcock-tests"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Tokens:
    def __init__(self, directory: Path) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        rsa_jwk = json.loads(RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_jwk = json.loads(ECAlgorithm.to_jwk(self.ec.public_key()))
        rsa_jwk.update(kid="rsa-1", use="sig")
        ec_jwk.update(kid="ec-1", use="sig")
        self.jwks = directory / "jwks.json"
        self.jwks.write_text(json.dumps({"keys": [rsa_jwk, ec_jwk]}))
        self.issued: list[str] = []  # every credential handed out, for the log scan

    def env(self) -> dict[str, str]:
        return {
            "STOPCOCK_AUTH": "on",
            "STOPCOCK_AUTH_JWKS": str(self.jwks),
            "STOPCOCK_AUTH_ISSUER": ISSUER,
            "STOPCOCK_AUTH_AUDIENCE": AUDIENCE,
        }

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "tester",
            "iat": now,
            "exp": now + 600,
            "stopcock_role": "write",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def _keep(self, token: str) -> str:
        self.issued.append(token)
        return token

    def rs256(self, kid: str = "rsa-1", **claims: Any) -> str:
        return self._keep(
            jwt.encode(self.claims(**claims), self.rsa, algorithm="RS256", headers={"kid": kid})
        )

    def es256(self, **claims: Any) -> str:
        return self._keep(
            jwt.encode(self.claims(**claims), self.ec, algorithm="ES256", headers={"kid": "ec-1"})
        )

    def alg_none(self) -> str:
        header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
        return self._keep(f"{header}.{_b64(json.dumps(self.claims()).encode())}.")

    def hs256_with_public_key(self) -> str:
        """Algorithm confusion: HMAC 'signed' with the RSA public key as the secret."""
        secret = self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
        payload = _b64(json.dumps(self.claims()).encode())
        signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return self._keep(f"{header}.{payload}.{_b64(signature)}")

    def tampered(self) -> str:
        header, _, signature = self.rs256(stopcock_role="read").split(".")
        payload = _b64(json.dumps(self.claims(stopcock_role="write")).encode())
        return self._keep(f"{header}.{payload}.{signature}")
