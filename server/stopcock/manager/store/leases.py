"""The SQL of replicas and pipeline leases (PostgreSQL), used by store/postgres.py.

A replica is alive while its `replicas` row has not expired; it extends the
row by heartbeats, and expiry is always judged by the database's clock
(`clock_timestamp()`), never a replica's. A pipeline's lease (`leases`) names
its owner; it is held while that owner is alive. A claim takes leases whose
owner is gone (or none), with `FOR UPDATE SKIP LOCKED` so that replicas
claiming together split the work instead of queueing on each other, and
increments the epoch on every claim: the epoch fences every write and runtime
command of the previous owner.

A replica whose heartbeats lapsed never comes back under the same id: it
registers anew, so its old leases are seen as abandoned (and it may claim
them again, with new epochs, like anyone).
"""

from __future__ import annotations

import os
import socket
from typing import Any

import psycopg
from stopcock.manager.store.protocol import Fence

# Pipelines with work for an owner: a runtime to run or stop, storage to
# clear, or a program to compile (its compiler may have died with a replica).
NEEDS_WORK = (
    "(p.resources_status <> 'Stopped' OR p.resources_desired <> 'Stopped'"
    " OR p.storage_status = 'Clearing' OR p.program_status = 'Pending')"
)
_ALIVE = "r.expires_at > clock_timestamp()"
# Replica rows expired this long ago are deleted (their leases stay claimable).
_FORGET_AFTER_SECS = 60

Conn = psycopg.AsyncConnection[Any]


async def register(conn: Conn, replica: str, ttl: float) -> None:
    """A new replica (this host and process, for operators), alive for `ttl` seconds."""
    await conn.execute(
        "INSERT INTO replicas (id, host, pid, expires_at)"
        " VALUES (%s, %s, %s, statement_timestamp() + make_interval(secs => %s))",
        (replica, socket.gethostname(), os.getpid(), ttl),
    )


async def heartbeat(conn: Conn, replica: str, ttl: float) -> bool:
    """Extends the replica's life by `ttl` from now; False if it had expired already.

    The expiry counts from the statement's start, which is after the replica
    sent the heartbeat: its own deadline (counted from sending) comes first.
    """
    cur = await conn.execute(
        "UPDATE replicas SET expires_at = statement_timestamp() + make_interval(secs => %s)"
        " WHERE id = %s AND expires_at > statement_timestamp() RETURNING 1",
        (ttl, replica),
    )
    alive = await cur.fetchone() is not None
    await conn.execute(
        "DELETE FROM replicas WHERE expires_at < clock_timestamp() - make_interval(secs => %s)",
        (_FORGET_AFTER_SECS,),
    )
    return alive


async def claim(conn: Conn, replica: str, limit: int) -> list[tuple[str, int]]:
    """Takes up to `limit` leases of pipelines with work and no live owner: [(id, epoch)]."""
    cur = await conn.execute(
        "SELECT l.pipeline_id FROM leases l JOIN pipelines p ON p.id = l.pipeline_id"
        f" LEFT JOIN replicas r ON r.id = l.owner AND {_ALIVE}"
        f" WHERE r.id IS NULL AND {NEEDS_WORK} LIMIT %s",
        (limit,),
    )
    candidates = [row[0] for row in await cur.fetchall()]
    if not candidates:
        return []
    async with conn.transaction():
        # Lock what nobody else is claiming right now, then judge the owners
        # again in a new statement (a fresh snapshot, after the locks): a
        # lease claimed meanwhile has a live owner and is left alone.
        cur = await conn.execute(
            "SELECT pipeline_id FROM leases WHERE pipeline_id = ANY(%s) FOR UPDATE SKIP LOCKED",
            (candidates,),
        )
        locked = [row[0] for row in await cur.fetchall()]
        if not locked:
            return []
        cur = await conn.execute(
            "UPDATE leases l SET owner = %(me)s, epoch = l.epoch + 1"
            " WHERE l.pipeline_id = ANY(%(locked)s)"
            "   AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.id = l.owner AND "
            f"{_ALIVE})"
            "   AND EXISTS (SELECT 1 FROM replicas r WHERE r.id = %(me)s AND "
            f"{_ALIVE})"
            " RETURNING l.pipeline_id, l.epoch",
            {"me": replica, "locked": locked},
        )
        return [(str(row[0]), int(row[1])) for row in await cur.fetchall()]


async def holds(conn: Conn, pipeline_id: str, fence: Fence) -> bool:
    """Whether `fence` is the pipeline's live lease; share-locks it for the transaction."""
    cur = await conn.execute(
        "SELECT 1 FROM leases l JOIN replicas r ON r.id = l.owner"
        f" WHERE l.pipeline_id = %s AND l.owner = %s AND l.epoch = %s AND {_ALIVE}"
        " FOR SHARE OF l",
        (pipeline_id, fence.owner, fence.epoch),
    )
    return await cur.fetchone() is not None


async def owned_with_work(conn: Conn, replica: str) -> list[str]:
    """The pipelines this replica owns that have work (to wake their actors)."""
    cur = await conn.execute(
        "SELECT l.pipeline_id FROM leases l JOIN pipelines p ON p.id = l.pipeline_id"
        f" WHERE l.owner = %s AND {NEEDS_WORK}",
        (replica,),
    )
    return [str(row[0]) for row in await cur.fetchall()]


async def release(conn: Conn, replica: str) -> None:
    """Gives every lease of the replica up and ends it (a graceful shutdown)."""
    await conn.execute("UPDATE leases SET owner = NULL WHERE owner = %s", (replica,))
    await conn.execute("DELETE FROM replicas WHERE id = %s", (replica,))
    await conn.execute("SELECT pg_notify('stopcock_pipelines', %s)", (f"released {replica}",))
