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
import json
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from stopcock.manager.domain.model import PipelineRecord
from stopcock.manager.store import leases
from stopcock.manager.store.protocol import (
    ApiKeyRecord,
    Change,
    DuplicateKey,
    Fence,
    Fenced,
    SchemaTooNew,
    StoreError,
)
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
    # 2 -> 3: replicas. A replica's row lives while it heartbeats (expiry by
    # the database's clock); a pipeline's lease names its owner and an epoch
    # that grows on every claim; recent versions of each record are kept for
    # watchers on any replica.
    """
    CREATE TABLE replicas (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
        expires_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE leases (
        pipeline_id TEXT PRIMARY KEY REFERENCES pipelines (id) ON DELETE CASCADE,
        owner TEXT,
        epoch BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX leases_owner ON leases (owner);
    INSERT INTO leases (pipeline_id) SELECT id FROM pipelines;
    CREATE TABLE pipeline_history (
        pipeline_id TEXT NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
        refresh_version BIGINT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (pipeline_id, refresh_version)
    )
    """,
    # 3 -> 4: the deployment's bootstrap options and the resources status
    # details (booleans as 0/1, as in SQLite: store/rows.py).
    """
    ALTER TABLE pipelines
        ADD COLUMN bootstrap_policy TEXT,
        ADD COLUMN silent_bootstrap INTEGER NOT NULL DEFAULT 0,
        ADD COLUMN concurrent_bootstrap INTEGER NOT NULL DEFAULT 0,
        ADD COLUMN bootstrap_approved INTEGER NOT NULL DEFAULT 0,
        ADD COLUMN resources_status_details TEXT
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
_UPDATE = sql.SQL("UPDATE pipelines SET {sets} WHERE id = %s").format(
    sets=sql.SQL(", ").join(
        sql.SQL("{} = %s").format(sql.Identifier(f)) for f in FIELDS if f != "id"
    ),
)
_KEY_COLUMNS = "id, name, role, key_hash, created_at"
_BY = {
    "id": "SELECT * FROM pipelines WHERE id = %s",
    "name": "SELECT * FROM pipelines WHERE name = %s",
}

# Versions of each record kept for watchers that resume (as control/records.py's HISTORY).
HISTORY = 256
# Every write notifies this channel with "<pipeline id> <refresh_version>".
CHANNEL = "stopcock_pipelines"

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


# A transaction of ours never waits between its statements; one that does
# belongs to a frozen or cut-off replica, and holds row locks every other
# replica's writes to that pipeline wait on: the server ends it after this.
IDLE_IN_TRANSACTION_TIMEOUT = "3s"


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # A server may default to asynchronous commits; ours are acknowledged as durable.
    await conn.execute("SET synchronous_commit = on")
    await conn.execute(
        sql.SQL("SET idle_in_transaction_session_timeout = {}").format(
            sql.Literal(IDLE_IN_TRANSACTION_TIMEOUT)
        )
    )


class PostgresStore:
    """The PostgreSQL store: `await PostgresStore(url).open()`, then the `Store` protocol."""

    shared = True

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

    # -- shared records (replicas): the rows are the truth ----------------

    @_translated
    async def get(self, pipeline_id: str) -> PipelineRecord | None:
        return await self._one("id", pipeline_id)

    @_translated
    async def get_by_name(self, name: str) -> PipelineRecord | None:
        return await self._one("name", name)

    async def _one(self, by: str, value: str) -> PipelineRecord | None:
        async with self._p.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_BY[by], (value,))
            row = await cur.fetchone()
            return None if row is None else from_row(row)

    @_translated
    async def insert(self, rec: PipelineRecord) -> None:
        """A new pipeline, its (unowned) lease and first history row; DuplicateKey on its name."""
        try:
            async with self._p.connection() as conn, conn.transaction():
                await conn.execute(
                    sql.SQL("INSERT INTO pipelines ({cols}) VALUES ({values})").format(
                        cols=sql.SQL(", ").join(sql.Identifier(f) for f in FIELDS),
                        values=sql.SQL(", ").join(sql.Placeholder() for _ in FIELDS),
                    ),
                    to_row(rec),
                )
                await conn.execute("INSERT INTO leases (pipeline_id) VALUES (%s)", (rec.id,))
                await self._published(conn, rec)
        except psycopg.errors.UniqueViolation as exc:
            raise DuplicateKey(f"a pipeline named '{rec.name}' already exists") from exc

    @_translated
    async def update(
        self, key: tuple[str, str], change: Change, fence: Fence | None = None
    ) -> tuple[PipelineRecord, PipelineRecord] | None:
        """Applies `change` to the current row under its lock: (old, new), or None if no row.

        `key` is ("id", ...) or ("name", ...). new is old when `change` returns
        None (nothing written). With a `fence`, its lease is checked in the
        same transaction (and share-locked, so no claim commits meanwhile).
        """
        try:
            async with self._p.connection() as conn, conn.transaction():
                async with conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(_BY[key[0]] + " FOR UPDATE", (key[1],))
                    row = await cur.fetchone()
                if row is None:
                    return None
                old = from_row(row)
                if fence is not None and not await leases.holds(conn, old.id, fence):
                    raise Fenced(
                        f"pipeline {old.id}: lease epoch {fence.epoch} of {fence.owner} "
                        "is no longer held"
                    )
                new = change(old)
                if new is None:
                    return old, old
                values = to_row(new)
                await conn.execute(_UPDATE, [*values[1:], new.id])
                await self._published(conn, new)
                return old, new
        except psycopg.errors.UniqueViolation as exc:
            raise DuplicateKey(f"a pipeline named '{key[1]}' already exists") from exc

    @_translated
    async def remove(
        self, name: str, check: Callable[[PipelineRecord], None]
    ) -> PipelineRecord | None:
        """Deletes the named pipeline if `check` (run under the row lock) does not raise."""
        async with self._p.connection() as conn, conn.transaction():
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(_BY["name"] + " FOR UPDATE", (name,))
                row = await cur.fetchone()
            if row is None:
                return None
            rec = from_row(row)
            check(rec)
            await conn.execute("DELETE FROM pipelines WHERE id = %s", (rec.id,))
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{rec.id} deleted"))
            return rec

    @staticmethod
    async def _published(conn: psycopg.AsyncConnection[Any], rec: PipelineRecord) -> None:
        """The version's history row (older ones pruned) and its notification, in the write's
        transaction: watchers see it only once committed, and see every version in order."""
        record = json.dumps(dict(zip(FIELDS, to_row(rec), strict=True)), separators=(",", ":"))
        await conn.execute(
            "INSERT INTO pipeline_history (pipeline_id, refresh_version, record)"
            " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (rec.id, rec.refresh_version, record),
        )
        await conn.execute(
            "DELETE FROM pipeline_history WHERE pipeline_id = %s AND refresh_version <= %s",
            (rec.id, rec.refresh_version - HISTORY),
        )
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{rec.id} {rec.refresh_version}"))

    @_translated
    async def history(self, pipeline_id: str, after: int) -> list[PipelineRecord]:
        """The kept versions of a pipeline newer than `after`, oldest first."""
        async with self._p.connection() as conn:
            cur = await conn.execute(
                "SELECT record FROM pipeline_history WHERE pipeline_id = %s"
                " AND refresh_version > %s ORDER BY refresh_version",
                (pipeline_id, after),
            )
            return [from_row(json.loads(r[0])) for r in await cur.fetchall()]

    @_translated
    async def statuses(self) -> list[tuple[str, str]]:
        """(id, deployment_status) of every pipeline: for the metrics, without the programs."""
        async with self._p.connection() as conn:
            cur = await conn.execute("SELECT id, deployment_status FROM pipelines")
            return [(str(r[0]), str(r[1])) for r in await cur.fetchall()]

    # -- replicas and leases (the SQL is in store/leases.py) -------------

    @_translated
    async def register(self, replica: str, ttl: float) -> None:
        async with self._p.connection() as conn, conn.transaction():
            await leases.register(conn, replica, ttl)

    @_translated
    async def heartbeat(self, replica: str, ttl: float) -> bool:
        async with self._p.connection() as conn, conn.transaction():
            return await leases.heartbeat(conn, replica, ttl)

    @_translated
    async def claim(self, replica: str, limit: int) -> list[tuple[str, int]]:
        async with self._p.connection() as conn:
            return await leases.claim(conn, replica, limit)

    @_translated
    async def owned_with_work(self, replica: str) -> list[str]:
        async with self._p.connection() as conn:
            return await leases.owned_with_work(conn, replica)

    @_translated
    async def release(self, replica: str) -> None:
        async with self._p.connection() as conn, conn.transaction():
            await leases.release(conn, replica)

    async def notifications(self) -> AsyncGenerator[str, None]:
        """Payloads on CHANNEL, on a connection of its own; StoreError when it breaks
        (notifications sent meanwhile are lost: the caller re-syncs)."""
        try:
            params = _with_connect_timeout(self._url)
            async with await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, **params
            ) as conn:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                yield "listening"
                async for note in conn.notifies():
                    yield note.payload
        except psycopg.Error as exc:
            raise StoreError(f"the PostgreSQL notification stream broke: {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()  # later calls fail with StoreError (the pool is closed)
