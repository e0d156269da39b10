"""The PostgreSQL form of the `Store` (stopcock.manager.store), chosen by STOPCOCK_DATABASE_URL.

The same records as the SQLite store, in the same columns and encoding
(`store/rows.py`): JSON columns hold the same compact JSON text, not jsonb, so
a record reads back exactly as it was written. Every write is one transaction,
committed with `synchronous_commit=on` (set on every connection): acknowledged
means on the server's disk.

The schema is versioned by the `schema_migrations` table (one row per applied
version); `MIGRATIONS[i]` moves a database from version i to i + 1. Opening the
store applies the missing ones in one transaction that first takes a
transaction-scoped advisory lock (`pg_advisory_xact_lock`): managers that open
the same database together take turns, and the first applies what is missing
while the others then find nothing to do.

Connections come from a psycopg-pool `AsyncConnectionPool` in autocommit mode
(each read is its own snapshot: it sees every write committed before it, the
other processes' included); writes open an explicit transaction. Ordering of
the writes of one pipeline is the caller's (control/records.py takes the
pipeline's lock around `put`).

One difference from SQLite's `INSERT OR REPLACE`: `put` upserts on the id
only, so a record whose name another id holds is refused (StoreError) instead
of replacing that other record. The lifecycle never writes one (it checks
names under its names lock).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from stopcock.manager.domain.model import PipelineRecord
from stopcock.manager.store.protocol import ApiKeyRecord, DuplicateKey, SchemaTooNew, StoreError
from stopcock.manager.store.rows import FIELDS, from_row, to_row

MIGRATIONS: list[str] = [
    # 0 -> 1: the pipelines table (the columns of sqlite.py's; integers are
    # 64-bit: `_since` columns are microseconds since the epoch).
    """
    CREATE TABLE pipelines (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        version BIGINT NOT NULL,
        runtime_config TEXT NOT NULL,
        program_code TEXT NOT NULL,
        udf_rust TEXT NOT NULL,
        udf_toml TEXT NOT NULL,
        program_config TEXT NOT NULL,
        tags TEXT NOT NULL,
        program_version BIGINT NOT NULL,
        program_status TEXT NOT NULL,
        program_status_since BIGINT NOT NULL,
        program_error TEXT NOT NULL,
        program_info TEXT,
        deployment_error TEXT,
        deployment_id TEXT,
        deployment_initial TEXT,
        resources_status TEXT NOT NULL,
        resources_status_since BIGINT NOT NULL,
        resources_desired TEXT NOT NULL,
        resources_desired_since BIGINT NOT NULL,
        runtime_status TEXT,
        runtime_status_since BIGINT,
        runtime_status_details TEXT,
        runtime_desired TEXT,
        runtime_desired_since BIGINT,
        deployment_status TEXT NOT NULL,
        deployment_status_since BIGINT NOT NULL,
        deployment_desired_status TEXT NOT NULL,
        deployment_desired_status_since BIGINT NOT NULL,
        storage_status TEXT NOT NULL,
        storage_status_since BIGINT NOT NULL,
        storage_status_details TEXT,
        refresh_version BIGINT NOT NULL,
        deployment_location TEXT,
        runtime_pid BIGINT,
        runtime_pid_start BIGINT
    )
    """,
    # 1 -> 2: API keys, stored only as a SHA-256 hash of the key; the UNIQUE
    # constraint on key_hash is the index `find_api_key` looks up.
    """
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL
    )
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)

# The advisory lock that serializes migrations: b"stopcock" as a signed 64-bit key.
MIGRATION_LOCK = int.from_bytes(b"stopcock", "big")

# Seconds to wait for a connection when the URL does not say (libpq waits forever).
CONNECT_TIMEOUT = 10

_UPSERT = sql.SQL(
    "INSERT INTO pipelines ({cols}) VALUES ({values}) ON CONFLICT (id) DO UPDATE SET {sets}"
).format(
    cols=sql.SQL(", ").join(sql.Identifier(f) for f in FIELDS),
    values=sql.SQL(", ").join(sql.Placeholder() for _ in FIELDS),
    sets=sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(f)) for f in FIELDS if f != "id"
    ),
)
_KEY_COLUMNS = "id, name, role, key_hash, created_at"

P = ParamSpec("P")
R = TypeVar("R")


def _translated(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Lets no psycopg exception out: StoreError carries its text (see protocol)."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except psycopg.Error as exc:  # psycopg_pool's errors are psycopg.OperationalErrors
            raise StoreError(f"the PostgreSQL store failed: {exc}") from exc

    return wrapper


def _with_connect_timeout(url: str) -> dict[str, Any]:
    """Connection parameters beyond the URL: a bounded connect unless the URL sets one."""
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise StoreError(f"STOPCOCK_DATABASE_URL is not a PostgreSQL URL: {exc}") from exc
    return {} if "connect_timeout" in given else {"connect_timeout": CONNECT_TIMEOUT}


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # A server may default to asynchronous commits; ours are acknowledged as durable.
    await conn.execute("SET synchronous_commit = on")


class PostgresStore:
    """The PostgreSQL store: `await PostgresStore(url).open()`, then the `Store` protocol."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8) -> None:
        self._url = url
        self._min_size = min_size
        self._max_size = max_size
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None

    @_translated
    async def open(self) -> PostgresStore:
        """Migrates the database (under the advisory lock), then opens the pool."""
        params = _with_connect_timeout(self._url)
        async with await psycopg.AsyncConnection.connect(self._url, **params) as conn:
            await _configure(conn)
            await self._migrate(conn)
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            self._url,
            kwargs={"autocommit": True, **params},
            min_size=self._min_size,
            max_size=self._max_size,
            open=False,
            configure=_configure,
            # A connection broken by a server restart is replaced, not handed out.
            check=AsyncConnectionPool.check_connection,
            name="stopcock-store",
        )
        await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        self._pool = pool
        return self

    @staticmethod
    async def _migrate(conn: psycopg.AsyncConnection[Any]) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
            row = await cur.fetchone()
            version = int(row[0]) if row is not None else 0
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"the database has schema version {version}; this Stopcock knows up to "
                    f"{SCHEMA_VERSION}: upgrade Stopcock"
                )
            for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
                await conn.execute(step)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))

    @property
    def _p(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        if self._pool is None:
            raise StoreError("the PostgreSQL store is not open")
        return self._pool

    @_translated
    async def schema_version(self) -> int:
        async with self._p.connection() as conn:
            cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
            row = await cur.fetchone()
            return int(row[0]) if row is not None else 0

    @_translated
    async def load_all(self) -> list[PipelineRecord]:
        async with (
            self._p.connection() as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute("SELECT * FROM pipelines ORDER BY name")
            return [from_row(r) for r in await cur.fetchall()]

    @_translated
    async def put(self, rec: PipelineRecord) -> None:
        async with self._p.connection() as conn, conn.transaction():
            await conn.execute(_UPSERT, to_row(rec))

    @_translated
    async def delete(self, pipeline_id: str) -> None:
        async with self._p.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM pipelines WHERE id = %s", (pipeline_id,))

    @_translated
    async def load_api_keys(self) -> list[ApiKeyRecord]:
        async with self._p.connection() as conn:
            cur = await conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY name")
            return [ApiKeyRecord(*row) for row in await cur.fetchall()]

    @_translated
    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash, as committed now (by any process): one unique-index lookup."""
        async with self._p.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_hash = %s", (key_hash,)
            )
            row = await cur.fetchone()
            return None if row is None else ApiKeyRecord(*row)

    @_translated
    async def put_api_key(self, key: ApiKeyRecord) -> None:
        """Inserts a key; DuplicateKey if its name is taken."""
        try:
            async with self._p.connection() as conn, conn.transaction():
                await conn.execute(
                    f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES (%s, %s, %s, %s, %s)",
                    (key.id, key.name, key.role, key.key_hash, key.created_at),
                )
        except psycopg.errors.UniqueViolation as exc:
            raise DuplicateKey(f"an API key named '{key.name}' already exists") from exc

    @_translated
    async def delete_api_key(self, name: str) -> bool:
        async with self._p.connection() as conn, conn.transaction():
            cur = await conn.execute("DELETE FROM api_keys WHERE name = %s", (name,))
            return cur.rowcount > 0

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()  # later calls fail with StoreError (the pool is closed)
