"""JWT verification against a JWKS (RS256 and ES256 only).

The algorithm is chosen from the KEY, never from the token: each JWK maps to
exactly one algorithm (its own `alg` if it states one, else RSA -> RS256 and
EC P-256 -> ES256), the token's header must name that same algorithm, and
PyJWT is told to accept only it. So `alg: none`, and HS256 "signed" with the
public key as an HMAC secret (algorithm confusion), are refused before any
signature is checked. `exp`, `iss` and `aud` are required; `nbf` is honoured.

The JWKS comes from a file or an https URL; it is cached and read again when
a token names an unknown `kid` (keys rotate), at most once per
REFRESH_INTERVAL so that made-up kids cannot hammer the key source.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

log = logging.getLogger("stopcock.auth")

ALLOWED = ("RS256", "ES256")
REFRESH_INTERVAL = 10.0  # seconds between two JWKS reloads caused by unknown kids
FETCH_TIMEOUT = 5.0
LEEWAY = 30  # seconds of clock skew tolerated on exp / nbf


class TokenRejected(Exception):
    """The token is not acceptable; the message says why (never the token)."""


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    role: str | None


@dataclass(frozen=True, slots=True)
class _Key:
    algorithm: str
    key: Any


def _parse_jwks(text: str) -> dict[str, _Key]:
    keys: dict[str, _Key] = {}
    for jwk in json.loads(text).get("keys", []):
        kid = jwk.get("kid", "")
        kty, alg = jwk.get("kty"), jwk.get("alg")
        if alg is None:
            alg = "RS256" if kty == "RSA" else "ES256" if jwk.get("crv") == "P-256" else None
        if alg not in ALLOWED:
            log.warning("JWKS key %r ignored: only RS256 and ES256 keys are accepted", kid)
            continue
        if (alg == "RS256") != (kty == "RSA"):
            log.warning("JWKS key %r ignored: its alg %s does not fit its kty %s", kid, alg, kty)
            continue
        loader = RSAAlgorithm if alg == "RS256" else ECAlgorithm
        keys[kid] = _Key(alg, loader.from_jwk(json.dumps(jwk)))
    return keys


class JwtVerifier:
    def __init__(self, jwks_source: str, issuer: str, audience: str, role_claim: str) -> None:
        self._source = jwks_source
        self._issuer = issuer
        self._audience = audience
        self._role_claim = role_claim
        self._keys: dict[str, _Key] = {}
        self._refreshed_at = float("-inf")
        self._lock = asyncio.Lock()

    def _read_source(self) -> str:
        if self._source.startswith("https://"):
            with urllib.request.urlopen(self._source, timeout=FETCH_TIMEOUT) as response:
                body: bytes = response.read()
                return body.decode()
        return Path(self._source).read_text()

    async def load(self) -> None:
        """Reads the JWKS; raises if it cannot be read at all (start-up)."""
        text = await asyncio.to_thread(self._read_source)
        self._keys = _parse_jwks(text)
        self._refreshed_at = time.monotonic()
        log.info("JWKS loaded: %d usable key(s)", len(self._keys))

    async def _key(self, kid: str) -> _Key:
        key = self._keys.get(kid)
        if key is None and time.monotonic() - self._refreshed_at > REFRESH_INTERVAL:
            async with self._lock:
                try:
                    await self.load()
                except (OSError, ValueError) as exc:
                    log.error("JWKS reload failed: %s", exc)
                    self._refreshed_at = time.monotonic()
            key = self._keys.get(kid)
        if key is None:
            raise TokenRejected("the token's key id (kid) is unknown")
        return key

    async def verify(self, token: str) -> VerifiedToken:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRejected("the token is not a well-formed JWT") from exc
        key = await self._key(str(header.get("kid", "")))
        if header.get("alg") != key.algorithm:
            raise TokenRejected(
                f"the token's algorithm must be {key.algorithm}, the algorithm of its key"
            )
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[key.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenRejected("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenRejected("the token is not valid yet (nbf)") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenRejected("the token's issuer is not the expected one") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenRejected("the token's audience is not this service") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(f"the token lacks the '{exc.claim}' claim") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenRejected("the token's signature does not verify") from exc
        except jwt.PyJWTError as exc:
            raise TokenRejected("the token is invalid") from exc
        role = claims.get(self._role_claim)
        return VerifiedToken(role=role if isinstance(role, str) else None)
