"""Settings, from environment variables (documented in README.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    pass


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{name} must be a TCP port number (1-65535), not {raw!r}")
    return int(raw)


def _database_url() -> str | None:
    raw = os.environ.get("STOPCOCK_DATABASE_URL", "")
    if not raw:
        return None
    if not raw.startswith(("postgresql://", "postgres://")):
        # Not echoed: a URL may carry a password.
        raise ConfigError(
            "STOPCOCK_DATABASE_URL must be a postgresql:// URL (unset: the SQLite database "
            "in STOPCOCK_DATA_DIR)"
        )
    return raw


def _lease_ttl() -> float:
    raw = os.environ.get("STOPCOCK_LEASE_TTL_SECS", "3")
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 1.5 <= value <= 60:
        raise ConfigError(
            f"STOPCOCK_LEASE_TTL_SECS must be a number of seconds from 1.5 to 60, not {raw!r}"
        )
    return value


def _storage_dir() -> Path | None:
    raw = os.environ.get("STOPCOCK_STORAGE_DIR", "")
    return Path(raw).absolute() if raw else None


def _spawner() -> str:
    raw = os.environ.get("STOPCOCK_SPAWNER", "template")
    if raw not in ("template", "cold"):
        raise ConfigError(f"STOPCOCK_SPAWNER must be template or cold, not {raw!r}")
    return raw


@dataclass(frozen=True, slots=True)
class Settings:
    grpc_port: int
    rest_port: int
    bind_address: str
    data_dir: Path
    log_level: str
    metrics_port: int
    # The PostgreSQL store's URL (STOPCOCK_DATABASE_URL); None: SQLite in data_dir.
    database_url: str | None = None
    # Checkpoint storage (STOPCOCK_STORAGE_DIR); None: inside data_dir. Replicas
    # that may take over each other's pipelines must share it.
    storage_dir: Path | None = None
    # How long a replica's leases outlive its last heartbeat (PostgreSQL only).
    lease_ttl_secs: float = 3.0
    # How runtimes start: forked from a warm template process, or cold.
    spawner: str = "template"

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            grpc_port=_port("STOPCOCK_GRPC_PORT", 50051),
            rest_port=_port("STOPCOCK_REST_PORT", 8080),
            bind_address=os.environ.get("STOPCOCK_BIND_ADDRESS", "127.0.0.1"),
            data_dir=Path(os.environ.get("STOPCOCK_DATA_DIR", ".stopcock")).absolute(),
            log_level=os.environ.get("STOPCOCK_LOG_LEVEL", "INFO").upper(),
            metrics_port=_port("STOPCOCK_METRICS_PORT", 9464),
            database_url=_database_url(),
            storage_dir=_storage_dir(),
            lease_ttl_secs=_lease_ttl(),
            spawner=_spawner(),
        )
