"""Durable storage: the `Store` protocol (protocol.py) and its SQLite form (sqlite.py)."""

from stopcock.manager.store.protocol import (
    ApiKeyRecord,
    DuplicateKey,
    SchemaTooNew,
    Store,
    StoreError,
)

__all__ = ["ApiKeyRecord", "DuplicateKey", "SchemaTooNew", "Store", "StoreError"]
