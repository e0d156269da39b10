"""Queries: each on a reader connection of its own, on a snapshot, stoppable at once.

A pool of READERS connections (opened with the database, see memdb) serves
the queries; more wait for a free one within their timeout. A query's rows
are read chunk by chunk on a query thread, one step per chunk sent, so a
slow client slows the query and holds no memory. A query ends when its
consumer stops iterating (its client went away), at its deadline
(QueryTimeout), or when `stop_all` is called (a suspend); SQLite is
interrupted at once in each case.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import sqlite3
from collections.abc import AsyncGenerator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from stopcock.runtime.data import DataError
from stopcock.runtime.memdb import READERS
from stopcock.runtime.text_table import TextTable
from stopcock.sql.adhoc import Insert, QueryRefused, parse
from stopcock.sql.schema import Compiled

log = logging.getLogger("stopcock.runtime")

READ_ONLY_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
QUERY_CHUNK_ROWS = 1000
# The answer formats the runtime writes (Feldera's AdHocResultFormat has
# arrow_ipc, parquet and hash too; the manager refuses those).
FORMATS = ("json", "text")


class NotServing(Exception):
    """The query was stopped by a suspend."""


def query_timeout_error(limit: float) -> DataError:
    return DataError(
        400,
        "QueryTimeout",
        f"The query ran for longer than the pipeline's query_timeout_secs ({limit:g} s) "
        "and was stopped; narrow it, or raise runtime_config.query_timeout_secs",
        {"query_timeout_secs": limit},
    )


def _read_only(action: int, *_: str | None) -> int:
    return sqlite3.SQLITE_OK if action in READ_ONLY_ACTIONS else sqlite3.SQLITE_DENY


def _bytes_as_base64(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# One encoder for every row: json.dumps with options builds a new one per call.
_ROW_ENCODER = json.JSONEncoder(allow_nan=False, default=_bytes_as_base64)


def _row_line(names: list[str], row: tuple[Any, ...]) -> str:
    try:
        return _ROW_ENCODER.encode(dict(zip(names, row, strict=True)))
    except ValueError:  # NaN or infinity, which JSON lacks: null instead
        return _ROW_ENCODER.encode(dict(zip(names, map(_jsonable, row), strict=True)))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, float) and not math.isfinite(value):  # JSON has no NaN/inf
        return None
    return value


class Renderer(Protocol):
    """Writes an answer's rows in one format, chunk by chunk."""

    def rows(self, names: list[str], rows: list[tuple[Any, ...]]) -> bytes: ...

    def end(self, names: list[str]) -> bytes: ...


class NdjsonRows:
    """Feldera's `format=json`: one JSON object per row, per line."""

    def rows(self, names: list[str], rows: list[tuple[Any, ...]]) -> bytes:
        return ("\n".join([_row_line(names, row) for row in rows]) + "\n").encode()

    def end(self, names: list[str]) -> bytes:
        return b""


def renderer(fmt: str) -> Renderer:
    return TextTable() if fmt == "text" else NdjsonRows()


def render_whole(fmt: str, names: list[str], rows: list[tuple[Any, ...]]) -> bytes:
    """A small answer (an INSERT's count) in one piece."""
    out = renderer(fmt)
    return out.rows(names, rows) + out.end(names)


def _invalid_query(exc: Exception) -> DataError:
    message = str(exc)
    if message == "not authorized":
        message = "not authorized: a query may only read (SELECT)"
    return DataError(400, "InvalidQuery", f"Invalid query: {message}", {"error": message})


def read_only(reader: sqlite3.Connection) -> None:
    """Lets `reader` run reading statements only (SQLite refuses the others at prepare)."""
    reader.set_authorizer(_read_only)


class Interrupted(Exception):
    """The query was interrupted (`ReaderQuery.stop`); `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReaderQuery:
    """One query on a reader connection, read chunk by chunk (each call on any thread).

    Its snapshot is fixed by its first step and held until `close`: rows
    committed later are not seen, and no writer waits for it (WAL).
    """

    def __init__(self, reader: sqlite3.Connection, sql: str, fmt: str = "json") -> None:
        self.reader = reader
        self._sql = sql
        self._cursor: sqlite3.Cursor | None = None
        self._names: list[str] = []
        self._out = renderer(fmt)
        self._ended = False
        self.stop_reason: str | None = None

    def stop(self, reason: str) -> None:
        """Interrupts the query from any thread; its current or next step raises Interrupted."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.reader.interrupt()

    def next_chunk(self) -> bytes | None:
        """Up to QUERY_CHUNK_ROWS rows in the answer's format; None once all was sent."""
        if self.stop_reason is not None:
            raise Interrupted(self.stop_reason)
        if self._ended:
            return None
        try:
            if self._cursor is None:
                self._cursor = self.reader.execute(self._sql)
                self._names = [d[0] for d in self._cursor.description or ()]
            rows = self._cursor.fetchmany(QUERY_CHUNK_ROWS)
            if rows:
                return self._out.rows(self._names, rows)
            self._ended = True
            return self._out.end(self._names) or None
        except (sqlite3.Error, sqlite3.Warning, ValueError) as exc:
            if self.stop_reason is not None:
                raise Interrupted(self.stop_reason) from exc
            raise _invalid_query(exc) from exc

    def close(self) -> None:
        """Ends the read transaction (call when no step runs)."""
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None


class Queries:
    """The reader pool and the queries running on it."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        # The program's relations: queries are Feldera SQL over them. None for
        # a program that no longer compiles (run as SQLite SQL, unchecked).
        self.catalog: Compiled | None = None
        self._readers: asyncio.Queue[sqlite3.Connection] = asyncio.Queue()
        self._threads = ThreadPoolExecutor(READERS, thread_name_prefix="query")
        self._running: set[ReaderQuery] = set()
        self._stopping = False

    def open(self, readers: list[sqlite3.Connection]) -> None:
        for reader in readers:
            read_only(reader)
            self._readers.put_nowait(reader)

    def stop_all(self) -> None:
        """Stops every running query and any later one (a suspend began)."""
        self._stopping = True
        for query in list(self._running):
            query.stop("suspend")

    def parse(self, sql: str) -> str | Insert:
        """The Feldera statement: a query in SQLite's SQL, or an INSERT's rows.

        InvalidQuery if it cannot run. A program that does not compile has
        no catalog: its queries run as SQLite SQL, unchecked, read-only.
        """
        if self.catalog is None:
            return sql
        try:
            return parse(self.catalog, sql)
        except QueryRefused as exc:
            raise _invalid_query(exc) from None

    async def take_back(self, count: int) -> None:
        """Waits until `count` readers are back in the pool (to close the database)."""
        for _ in range(count):
            await self._readers.get()

    async def run(self, sql: str, fmt: str = "json") -> AsyncGenerator[bytes, None]:
        """The rows of a read-only query (in SQLite's SQL), in chunks read as they are sent.

        Ends with the query timeout (QueryTimeout), at a suspend
        (NotServing), or when the consumer stops iterating (the client
        went away): the query is interrupted in SQLite at once.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            async with asyncio.timeout_at(deadline):
                reader = await self._readers.get()
        except TimeoutError:
            raise query_timeout_error(self.timeout) from None
        query = ReaderQuery(reader, sql, fmt)
        if self._stopping:
            query.stop("suspend")
        self._running.add(query)
        timer = loop.call_at(deadline, query.stop, "timeout")
        step: Future[bytes | None] | None = None
        outcome = "the client went away"
        try:
            while True:
                step = self._threads.submit(query.next_chunk)
                try:
                    chunk = await asyncio.wrap_future(step)
                except Interrupted as exc:
                    outcome = exc.reason
                    if exc.reason == "timeout":
                        raise query_timeout_error(self.timeout) from None
                    raise NotServing("the pipeline is suspending") from None
                except DataError:
                    outcome = "refused"
                    raise
                if chunk is None:
                    outcome = "done"
                    return
                yield chunk
        finally:
            timer.cancel()
            self._running.discard(query)
            self._hand_back(query, step)
            if outcome not in ("done", "refused"):
                log.info("query stopped: %s", outcome)

    def _hand_back(self, query: ReaderQuery, step: Future[bytes | None] | None) -> None:
        """Returns the query's reader to the pool once no step of it runs."""
        loop = asyncio.get_running_loop()

        def release(_: object = None) -> None:
            query.close()
            loop.call_soon_threadsafe(self._readers.put_nowait, query.reader)

        if step is None or step.done():
            release()
        else:
            query.stop("cancelled")
            step.add_done_callback(release)
