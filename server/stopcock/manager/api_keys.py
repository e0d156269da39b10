"""API keys: minted once, stored as hashes, checked in constant time.

A key is `apikey:` followed by 128 characters drawn from [A-Za-z0-9] by the
operating system's CSPRNG (`secrets`): about 762 bits, so a plain SHA-256 of
it is a safe verifier (no salt or slow hash is needed against guessing a key
of that entropy). Checking a presented key compares its hash with every
stored hash using `hmac.compare_digest`, without stopping at the first
match, so the time taken says nothing about which key (if any) matched.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import sqlite3
import string
import uuid

from stopcock.manager import errors
from stopcock.manager.definition import validate_name
from stopcock.manager.model import now_us
from stopcock.manager.store import ApiKeyRecord, Store

PREFIX = "apikey:"
KEY_LENGTH = 128
ROLES = ("read", "write")
_ALPHABET = string.ascii_letters + string.digits
RELOAD_INTERVAL = 1.0  # seconds: at most one reload from the store per second on a miss


def mint() -> str:
    return PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(KEY_LENGTH))


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def validate_role(role: str) -> str:
    if role not in ROLES:
        raise errors.bad_request(
            "InvalidRole",
            f"Role must be 'read' or 'write', not '{role}'",
            {"role": role, "allowed": list(ROLES)},
        )
    return role


def new_record(name: str, role: str) -> tuple[ApiKeyRecord, str]:
    """A new key's record and the key itself (to show once)."""
    validate_name(name)
    validate_role(role)
    key = mint()
    return ApiKeyRecord(str(uuid.uuid4()), name, role, key_hash(key), now_us()), key


def find(keys: list[ApiKeyRecord], presented: str) -> ApiKeyRecord | None:
    digest = key_hash(presented)
    found = None
    for record in keys:
        if hmac.compare_digest(record.key_hash, digest):
            found = record
    return found


class ApiKeys:
    """The manager's view of the keys: a write-through cache of the store.

    Keys minted offline (`stopcock api-key create`, straight into the
    database) are picked up by a reload when a presented key is unknown, at
    most once per RELOAD_INTERVAL so that bad keys cannot hammer the store.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._keys: list[ApiKeyRecord] = []
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        self._keys = await self._store.load_api_keys()
        self._loaded_at = asyncio.get_running_loop().time()

    def list(self) -> list[ApiKeyRecord]:
        return sorted(self._keys, key=lambda k: k.name)

    async def verify(self, presented: str) -> ApiKeyRecord | None:
        found = find(self._keys, presented)
        if found is None and asyncio.get_running_loop().time() - self._loaded_at > RELOAD_INTERVAL:
            async with self._lock:
                await self.load()
            found = find(self._keys, presented)
        return found

    async def create(self, name: str, role: str) -> tuple[ApiKeyRecord, str]:
        record, key = new_record(name, role)
        async with self._lock:
            try:
                await self._store.put_api_key(record)
            except sqlite3.IntegrityError:
                raise errors.duplicate_name(name, "API key") from None
            self._keys = [*self._keys, record]
        return record, key

    async def delete(self, name: str) -> None:
        async with self._lock:
            if not await self._store.delete_api_key(name):
                raise errors.ApiError(
                    404, "UnknownApiKey", f"Unknown API key '{name}'", {"name": name}, "NOT_FOUND"
                )
            self._keys = [k for k in self._keys if k.name != name]
