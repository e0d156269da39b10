"""Authentication settings, from the environment (see README.md, "Authentication").

STOPCOCK_AUTH=on turns authentication on. JWTs are then verified against
STOPCOCK_AUTH_JWKS (a JWKS file path or an https URL) and must carry
STOPCOCK_AUTH_ISSUER and STOPCOCK_AUTH_AUDIENCE; their role is read from the
claim STOPCOCK_AUTH_ROLE_CLAIM (default `stopcock_role`).

With authentication off, nothing may listen beyond loopback: `require_loopback`
is what the manager and the Envoy launcher call before binding.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

DEFAULT_ROLE_CLAIM = "stopcock_role"


class AuthConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class AuthSettings:
    enabled: bool
    jwks: str = ""
    issuer: str = ""
    audience: str = ""
    role_claim: str = DEFAULT_ROLE_CLAIM

    @classmethod
    def from_env(cls) -> AuthSettings:
        mode = os.environ.get("STOPCOCK_AUTH", "off").strip().lower()
        if mode not in ("on", "off"):
            raise AuthConfigError(f"STOPCOCK_AUTH must be 'on' or 'off', not {mode!r}")
        if mode == "off":
            return cls(enabled=False)
        values = {
            name: os.environ.get(name, "").strip()
            for name in ("STOPCOCK_AUTH_JWKS", "STOPCOCK_AUTH_ISSUER", "STOPCOCK_AUTH_AUDIENCE")
        }
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise AuthConfigError(
                f"STOPCOCK_AUTH=on needs {', '.join(missing)} (see README.md, Authentication)"
            )
        jwks = values["STOPCOCK_AUTH_JWKS"]
        if jwks.startswith("http://"):
            raise AuthConfigError("STOPCOCK_AUTH_JWKS must be a file path or an https:// URL")
        return cls(
            enabled=True,
            jwks=jwks,
            issuer=values["STOPCOCK_AUTH_ISSUER"],
            audience=values["STOPCOCK_AUTH_AUDIENCE"],
            role_claim=os.environ.get("STOPCOCK_AUTH_ROLE_CLAIM", DEFAULT_ROLE_CLAIM).strip()
            or DEFAULT_ROLE_CLAIM,
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_loopback(auth: AuthSettings, host: str, what: str) -> None:
    """Refuses to expose an unauthenticated API beyond this machine."""
    if not auth.enabled and not is_loopback(host):
        raise AuthConfigError(
            f"refusing to listen on {host} for the {what} with authentication off: anyone who "
            "can reach it could control every pipeline. Set STOPCOCK_AUTH=on (with "
            "STOPCOCK_AUTH_JWKS, STOPCOCK_AUTH_ISSUER, STOPCOCK_AUTH_AUDIENCE), or bind "
            "127.0.0.1"
        )
