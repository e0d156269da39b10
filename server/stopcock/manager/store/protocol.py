"""The `Store` seam: what the lifecycle and the authenticator need from durable storage.

The manager acknowledges a change only after `put` returns: an
implementation makes every write one durable transaction. Implementations
raise StoreError (and its kinds) only: no driver's exception crosses this
seam, so callers never import a driver.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
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

    # Whether several managers may share it (then it is a SharedStore).
    shared: bool

    async def load_all(self) -> list[PipelineRecord]: ...
    async def put(self, rec: PipelineRecord) -> None: ...
    async def delete(self, pipeline_id: str) -> None: ...
    async def load_api_keys(self) -> list[ApiKeyRecord]: ...
    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None: ...
    async def put_api_key(self, key: ApiKeyRecord) -> None: ...
    async def delete_api_key(self, name: str) -> bool: ...
    async def close(self) -> None: ...


# A change computed from the current record inside the write's transaction:
# the new record, or None to change nothing. It may raise (an ApiError): the
# transaction is then rolled back.
Change = Callable[[PipelineRecord], PipelineRecord | None]


@dataclass(frozen=True, slots=True)
class Fence:
    """The lease a write is made under: `owner` (a replica) holds `epoch`."""

    owner: str
    epoch: int


class SharedStore(Store, Protocol):
    """A store several manager replicas share (PostgreSQL): rows are the truth.

    Every write reads the current row under a row lock, applies a `Change`
    and writes it back in one transaction, with its history row and a
    notification to every replica. A fenced write also checks, in that
    transaction, that its lease is still held: else `Fenced`, nothing written.
    """

    async def get(self, pipeline_id: str) -> PipelineRecord | None: ...
    async def get_by_name(self, name: str) -> PipelineRecord | None: ...
    async def insert(self, rec: PipelineRecord) -> None: ...
    async def update(
        self, key: tuple[str, str], change: Change, fence: Fence | None = None
    ) -> tuple[PipelineRecord, PipelineRecord] | None: ...
    async def remove(
        self, name: str, check: Callable[[PipelineRecord], None]
    ) -> PipelineRecord | None: ...
    async def history(self, pipeline_id: str, after: int) -> list[PipelineRecord]: ...
    async def statuses(self) -> list[tuple[str, str]]: ...
    # Replicas and leases (see store/leases.py).
    async def register(self, replica: str, ttl: float) -> None: ...
    async def heartbeat(self, replica: str, ttl: float) -> bool: ...
    async def claim(self, replica: str, limit: int) -> list[tuple[str, int]]: ...
    async def owned_with_work(self, replica: str) -> list[str]: ...
    async def release(self, replica: str) -> None: ...
    def notifications(self) -> AsyncGenerator[str, None]: ...


class StoreError(Exception):
    """The store failed (I/O, corruption, a driver error): no driver exception crosses."""


class DuplicateKey(StoreError):
    """A record with that unique key (a name) exists already."""


class SchemaTooNew(StoreError):
    """The database was written by a newer Stopcock."""


class Fenced(StoreError):
    """A fenced write's lease is no longer held: another replica owns the pipeline."""
