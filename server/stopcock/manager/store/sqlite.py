"""The SQLite form of the `Store` (stopcock.manager.store), the embedded default.

The manager acknowledges a change only after `put` returns, so every write is
one transaction in WAL mode with `synchronous=FULL` (the commit is fsynced:
it survives a crash of the manager and of the machine). The schema carries a
version from day one; `MIGRATIONS[i]` moves a database from version i to
i + 1, and opening a database runs the missing ones in one transaction.

SQLite connections are used from one thread only: `AsyncStore` runs every
call on a dedicated single-thread executor, which also serializes writes.

Group commit: pipeline writes that arrive while a commit is under way wait
and then go together, in one transaction and one fsync, each in a savepoint
of its own (one that fails is rolled back alone and fails alone). Every
writer still returns only once its write is durable; 500 pipelines starting
at once no longer queue up behind 2,500 fsyncs one by one.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from stopcock.manager.domain.model import PipelineRecord
from stopcock.manager.store.protocol import ApiKeyRecord, DuplicateKey, SchemaTooNew, StoreError
from stopcock.manager.store.rows import FIELDS, from_row, to_row

MIGRATIONS: list[str] = [
    # 0 -> 1: the pipelines table. JSON columns hold objects; `_since`
    # columns are microseconds since the epoch.
    """
    CREATE TABLE pipelines (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        version INTEGER NOT NULL,
        runtime_config TEXT NOT NULL,
        program_code TEXT NOT NULL,
        udf_rust TEXT NOT NULL,
        udf_toml TEXT NOT NULL,
        program_config TEXT NOT NULL,
        tags TEXT NOT NULL,
        program_version INTEGER NOT NULL,
        program_status TEXT NOT NULL,
        program_status_since INTEGER NOT NULL,
        program_error TEXT NOT NULL,
        program_info TEXT,
        deployment_error TEXT,
        deployment_id TEXT,
        deployment_initial TEXT,
        resources_status TEXT NOT NULL,
        resources_status_since INTEGER NOT NULL,
        resources_desired TEXT NOT NULL,
        resources_desired_since INTEGER NOT NULL,
        runtime_status TEXT,
        runtime_status_since INTEGER,
        runtime_status_details TEXT,
        runtime_desired TEXT,
        runtime_desired_since INTEGER,
        deployment_status TEXT NOT NULL,
        deployment_status_since INTEGER NOT NULL,
        deployment_desired_status TEXT NOT NULL,
        deployment_desired_status_since INTEGER NOT NULL,
        storage_status TEXT NOT NULL,
        storage_status_since INTEGER NOT NULL,
        storage_status_details TEXT,
        refresh_version INTEGER NOT NULL,
        deployment_location TEXT,
        runtime_pid INTEGER,
        runtime_pid_start INTEGER
    )
    """,
    # 1 -> 2: API keys, stored only as a SHA-256 hash of the key.
    """
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    )
    """,
    # 2 -> 3 ... 6 -> 7: the deployment's bootstrap options and the
    # resources status details (one statement per step: `execute` runs one).
    "ALTER TABLE pipelines ADD COLUMN bootstrap_policy TEXT",
    "ALTER TABLE pipelines ADD COLUMN silent_bootstrap INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE pipelines ADD COLUMN concurrent_bootstrap INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE pipelines ADD COLUMN bootstrap_approved INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE pipelines ADD COLUMN resources_status_details TEXT",
]

SCHEMA_VERSION = len(MIGRATIONS)

# An upsert by id. Not INSERT OR REPLACE: that would settle a clash on the
# UNIQUE name by deleting the other pipeline's row; this refuses it.
_INSERT = (
    f"INSERT INTO pipelines ({', '.join(FIELDS)}) "
    f"VALUES ({', '.join('?' for _ in FIELDS)}) "
    f"ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{field} = excluded.{field}" for field in FIELDS if field != "id")
)


F = TypeVar("F", bound=Callable[..., Any])


def _translated(method: F) -> F:
    """Lets no sqlite3 exception out: StoreError carries its text (see protocol)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            raise StoreError(f"the SQLite store failed: {exc}") from exc

    return wrapper  # type: ignore[return-value]


class SqliteStore:
    """The embedded default. Blocking; wrap it in `AsyncStore`."""

    shared = False

    @_translated
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the database has schema version {version}; this Stopcock knows up to "
                f"{SCHEMA_VERSION}: upgrade Stopcock"
            )
        if version == SCHEMA_VERSION:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for step in MIGRATIONS[version:]:
                self._db.execute(step)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @_translated
    def load_all(self) -> list[PipelineRecord]:
        rows = self._db.execute("SELECT * FROM pipelines ORDER BY name").fetchall()
        return [from_row(r) for r in rows]

    @_translated
    def put(self, rec: PipelineRecord) -> None:
        self._db.execute(_INSERT, to_row(rec))

    @_translated
    def apply(self, ops: list[Callable[[SqliteStore], None]]) -> list[Exception | None]:
        """Runs the writes `ops` in one transaction, each in its own savepoint.

        Returns each one's failure (None: done). A failure of the commit
        itself raises: then none of them is done.
        """
        if len(ops) == 1:  # autocommit: one statement is its own transaction
            try:
                ops[0](self)
            except StoreError as exc:
                return [exc]
            return [None]
        failures: list[Exception | None] = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                self._db.execute("SAVEPOINT op")
                try:
                    op(self)
                except StoreError as exc:
                    self._db.execute("ROLLBACK TO op")
                    failures.append(exc)
                else:
                    failures.append(None)
                self._db.execute("RELEASE op")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return failures

    @_translated
    def delete(self, pipeline_id: str) -> None:
        self._db.execute("DELETE FROM pipelines WHERE id = ?", (pipeline_id,))

    @_translated
    def load_api_keys(self) -> list[ApiKeyRecord]:
        rows = self._db.execute(
            "SELECT id, name, role, key_hash, created_at FROM api_keys ORDER BY name"
        ).fetchall()
        return [ApiKeyRecord(*row) for row in rows]

    @_translated
    def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash, as committed now (by any process).

        One lookup in the UNIQUE index on key_hash. The connection is in
        autocommit mode, so each statement is its own read transaction and
        sees every write committed before it, the CLI's included.
        """
        row = self._db.execute(
            "SELECT id, name, role, key_hash, created_at FROM api_keys WHERE key_hash = ?",
            (key_hash,),
        ).fetchone()
        return None if row is None else ApiKeyRecord(*row)

    @_translated
    def put_api_key(self, key: ApiKeyRecord) -> None:
        """Inserts a key; DuplicateKey if its name is taken."""
        try:
            self._db.execute(
                "INSERT INTO api_keys (id, name, role, key_hash, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (key.id, key.name, key.role, key.key_hash, key.created_at),
            )
        except sqlite3.IntegrityError as exc:
            raise DuplicateKey(f"an API key named '{key.name}' already exists") from exc

    @_translated
    def delete_api_key(self, name: str) -> bool:
        return self._db.execute("DELETE FROM api_keys WHERE name = ?", (name,)).rowcount > 0

    @_translated
    def close(self) -> None:
        self._db.close()


class AsyncStore:
    """Runs a `SqliteStore` on its own thread so the event loop never blocks on fsync."""

    shared = False

    def __init__(self, path: Path) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._path = path
        self._sync: SqliteStore | None = None
        # Writes waiting for the commit under way to end (see the module doc).
        self._waiting: list[tuple[Callable[[SqliteStore], None], asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def open(self) -> AsyncStore:
        self._sync = await self._run(SqliteStore, self._path)
        return self

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def _s(self) -> SqliteStore:
        assert self._sync is not None, "AsyncStore.open() was not awaited"
        return self._sync

    async def load_all(self) -> list[PipelineRecord]:
        result: list[PipelineRecord] = await self._run(self._s.load_all)
        return result

    async def put(self, rec: PipelineRecord) -> None:
        await self._write(lambda db: db.put(rec))

    async def delete(self, pipeline_id: str) -> None:
        await self._write(lambda db: db.delete(pipeline_id))

    async def _write(self, op: Callable[[SqliteStore], None]) -> None:
        """Returns once `op` is committed, in the next group commit."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((op, done))
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_waiting())
        await done

    async def _commit_waiting(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    failures = await self._run(self._s.apply, [op for op, _ in batch])
                except Exception as exc:  # the commit failed: none of them is done
                    failures = [exc] * len(batch)
                for (_, done), failure in zip(batch, failures, strict=True):
                    if done.done():  # its writer gave up waiting; the write stands
                        continue
                    if failure is None:
                        done.set_result(None)
                    else:
                        done.set_exception(failure)
        finally:
            self._committer = None
            # Cancelled (the manager is closing): nobody may wait forever.
            for _, done in self._waiting:
                if not done.done():
                    done.set_exception(StoreError("the store closed before this write"))
            self._waiting = []

    async def load_api_keys(self) -> list[ApiKeyRecord]:
        result: list[ApiKeyRecord] = await self._run(self._s.load_api_keys)
        return result

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        result: ApiKeyRecord | None = await self._run(self._s.find_api_key, key_hash)
        return result

    async def put_api_key(self, key: ApiKeyRecord) -> None:
        await self._run(self._s.put_api_key, key)

    async def delete_api_key(self, name: str) -> bool:
        result: bool = await self._run(self._s.delete_api_key, name)
        return result

    async def close(self) -> None:
        if self._committer is not None:
            await asyncio.shield(self._committer)
        if self._sync is not None:
            await self._run(self._sync.close)
        self._executor.shutdown(wait=True)


LOCK_FILE = "manager.lock"


def claim_single_manager(data_dir: Path) -> int:
    """Takes the data directory's manager lock; returns its fd (held for the process's life).

    SQLite is one manager's database: two managers on it would both act on
    every pipeline. The lock (flock) is the kernel's, so it is released
    whenever the holder ends, SIGKILL included, and runtime processes do not
    inherit it (the fd is close-on-exec). StoreError names the holder.
    """
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreError(
            f"another Stopcock manager (pid {holder}) uses the data directory {data_dir}: "
            "with SQLite there is one manager per data directory. Stop it, or give this "
            "one its own STOPCOCK_DATA_DIR (replicas share a PostgreSQL database instead: "
            "STOPCOCK_DATABASE_URL)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
