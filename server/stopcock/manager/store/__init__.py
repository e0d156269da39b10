"""Durable storage: the `Store` protocol; SQLite (sqlite.py) and PostgreSQL (postgres.py)."""

from stopcock.manager.store.protocol import (
    ApiKeyRecord,
    Change,
    DuplicateKey,
    Fence,
    Fenced,
    SchemaTooNew,
    SharedStore,
    Store,
    StoreError,
)

__all__ = [
    "ApiKeyRecord",
    "Change",
    "DuplicateKey",
    "Fence",
    "Fenced",
    "SchemaTooNew",
    "SharedStore",
    "Store",
    "StoreError",
]
