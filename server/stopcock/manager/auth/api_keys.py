"""API keys: minted once, stored as hashes, checked in constant time.

A key is `apikey:` followed by 128 characters drawn from [A-Za-z0-9] by the
operating system's CSPRNG (`secrets`): about 762 bits, so a plain SHA-256 of
it is a safe verifier (no salt or slow hash is needed against guessing a key
of that entropy). Checking a presented key compares its hash with every
cached hash using `hmac.compare_digest`, without stopping at the first
match, so the time taken says nothing about which key (if any) matched.
A key missing from the cache is looked up by its hash in the store's index:
that lookup can only tell an attacker about hash values, and finding a key
from its SHA-256 is as hard as guessing the key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import string
import uuid

from stopcock.manager.domain import errors
from stopcock.manager.domain.definition import validate_name
from stopcock.manager.domain.model import now_us
from stopcock.manager.store import ApiKeyRecord, DuplicateKey, Store

PREFIX = "apikey:"
KEY_LENGTH = 128
ROLES = ("read", "write")
_ALPHABET = string.ascii_letters + string.digits


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
    database) are found on their first use: every presented key the cache
    lacks is looked up in the store (one indexed read) and cached if there.
    No rate limit: a limit would refuse a fresh key used within it (it did,
    for up to a second), and a lookup costs less than the refusal.

    On a shared store (replicas) there is no cache: a key deleted through
    one replica must stop working on all of them at once, so every check is
    the indexed lookup and every list a query.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._keys: list[ApiKeyRecord] = []
        # Serializes changes of the cache, so that a lookup that read a key
        # just before its deletion cannot put it back after it.
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        self._keys = await self._store.load_api_keys()

    async def list(self) -> list[ApiKeyRecord]:
        if self._store.shared:
            return await self._store.load_api_keys()
        return sorted(self._keys, key=lambda k: k.name)

    async def verify(self, presented: str) -> ApiKeyRecord | None:
        if self._store.shared:
            return await self._store.find_api_key(key_hash(presented))
        found = find(self._keys, presented)
        if found is not None:
            return found
        async with self._lock:
            found = await self._store.find_api_key(key_hash(presented))
            if found is not None and all(k.id != found.id for k in self._keys):
                self._keys = [*self._keys, found]
        return found

    async def create(self, name: str, role: str) -> tuple[ApiKeyRecord, str]:
        record, key = new_record(name, role)
        async with self._lock:
            try:
                await self._store.put_api_key(record)
            except DuplicateKey:
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
