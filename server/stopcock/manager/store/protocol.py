"""The `Store` seam: what the lifecycle and the authenticator need from durable storage.

The manager acknowledges a change only after `put` returns: an
implementation makes every write one durable transaction. Implementations
raise StoreError (and its kinds) only: no driver's exception crosses this
seam, so callers never import a driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from stopcock.manager.domain.model import PipelineRecord


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    name: str
    role: str
    key_hash: str
    created_at: int


class Store(Protocol):
    """What the lifecycle and the authenticator need from durable storage."""

    async def load_all(self) -> list[PipelineRecord]: ...
    async def put(self, rec: PipelineRecord) -> None: ...
    async def delete(self, pipeline_id: str) -> None: ...
    async def load_api_keys(self) -> list[ApiKeyRecord]: ...
    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None: ...
    async def put_api_key(self, key: ApiKeyRecord) -> None: ...
    async def delete_api_key(self, name: str) -> bool: ...
    async def close(self) -> None: ...


class StoreError(Exception):
    """The store failed (I/O, corruption, a driver error): no driver exception crosses."""


class DuplicateKey(StoreError):
    """A record with that unique key (a name) exists already."""


class SchemaTooNew(StoreError):
    """The database was written by a newer Stopcock."""
