"""The runtime's engine restoring a checkpoint of another program: each bootstrap policy.

Real checkpoint files (CheckpointStore on a temporary storage directory) and
a real Engine; the REST path through the manager is in test_bootstrapping.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from stopcock.program import load_program
from stopcock.runtime import bootstrap
from stopcock.runtime.checkpoints import CheckpointStore
from stopcock.runtime.engine import Engine, Status
from stopcock.runtime.faults import Faults
from stopcock.runtime.memdb import MemoryDatabase

OLD = """
CREATE TABLE t1 (x INTEGER) WITH ('materialized' = 'true');
CREATE TABLE t2 (y INTEGER) WITH ('materialized' = 'true');
CREATE MATERIALIZED VIEW v1 AS SELECT COUNT(*) AS c FROM t1;
"""
# v2 is new; t2 changed (so it restarts empty); t1 and v1 are as they were.
NEW = """
CREATE TABLE t1 (x INTEGER) WITH ('materialized' = 'true');
CREATE TABLE t2 (y INTEGER, z TEXT) WITH ('materialized' = 'true');
CREATE MATERIALIZED VIEW v1 AS SELECT COUNT(*) AS c FROM t1;
CREATE MATERIALIZED VIEW v2 AS SELECT SUM(x) AS s FROM t1;
"""
EXPECTED_DIFF = {
    "added_tables": [],
    "removed_tables": [],
    "modified_tables": ["t2"],
    "added_views": ["v2"],
    "removed_views": [],
    "modified_views": [],
}
BOUND = 10.0  # seconds: every wait below is bounded by it


def _checkpoint(storage: Path) -> CheckpointStore:
    """A storage directory with one checkpoint of OLD holding rows in t1 and t2."""
    store = CheckpointStore(storage, Faults())
    memdb = MemoryDatabase.open()
    load_program(memdb.db, OLD)
    bootstrap.stamp(memdb.db, OLD)
    memdb.db.execute("INSERT INTO t1 VALUES (1), (2), (3)")
    memdb.db.execute("INSERT INTO t2 VALUES (7)")
    store.commit(store.stage(memdb), processed_records=4, sequence_number=0)
    memdb.db.close()
    return store


def _engine(store: CheckpointStore, policy: str, program: str = NEW) -> Engine:
    return Engine(
        deployment_id="d",
        program_code=program,
        initial="Running",
        storage=store,
        checkpoint_interval=None,
        spool_dir=store.dir,
        bootstrap_policy=policy,
    )


async def _until(engine: Engine, status: str) -> Status:
    """The first report whose status is `status` (bounded)."""

    async def wait() -> Status:
        current = engine.status
        while current.status != status:
            current = await engine.wait_for_change(current.sequence)
        return current

    return await asyncio.wait_for(wait(), BOUND)


async def _rows(engine: Engine, sql: str) -> list[dict[str, object]]:
    chunks: AsyncIterator[bytes] = engine.query(sql)
    text = b"".join([chunk async for chunk in chunks]).decode()
    return [json.loads(line) for line in text.splitlines() if line]


async def test_allow_keeps_unchanged_tables_and_recomputes_views(tmp_path: Path) -> None:
    engine = _engine(_checkpoint(tmp_path), "allow")
    seen: list[str] = []

    async def record() -> None:
        current = engine.status
        while current.status != "Running":
            current = await engine.wait_for_change(current.sequence)
            seen.append(current.status)

    recorder = asyncio.create_task(record())
    await engine.initialize()
    await asyncio.wait_for(recorder, BOUND)
    assert "Bootstrapping" in seen and "AwaitingApproval" not in seen
    assert engine.processed_records == 4  # restored, not started over
    assert await _rows(engine, "SELECT c FROM v1") == [{"c": 3}]
    assert await _rows(engine, "SELECT s FROM v2") == [{"s": 6}]
    assert await _rows(engine, "SELECT COUNT(*) AS n FROM t2") == [{"n": 0}]
    assert engine.status.details is None  # the bootstrap's details are gone once running


async def test_reject_fails_with_feldera_error_and_leaves_the_checkpoint(tmp_path: Path) -> None:
    store = _checkpoint(tmp_path)
    before = [c.uuid for c in store.list()]
    engine = _engine(store, "reject")
    await engine.initialize()
    status = engine.status
    assert status.status == "Failed"
    assert status.error is not None
    assert status.error["error_code"] == "BootstrapRejected"
    assert status.error["message"] == (
        "Bootstrapping of the modified pipeline was rejected by the user."
    )
    assert status.error["details"]["approval_diff"]["program_diff"] == EXPECTED_DIFF
    assert [c.uuid for c in store.list()] == before


async def test_await_approval_waits_with_the_diff_until_approved(tmp_path: Path) -> None:
    engine = _engine(_checkpoint(tmp_path), "await_approval")
    init = asyncio.create_task(engine.initialize())
    awaiting = await _until(engine, "AwaitingApproval")
    assert awaiting.details is not None
    assert awaiting.details["approval_diff"]["program_diff"] == EXPECTED_DIFF
    assert awaiting.details["approval_diff"]["program_diff_error"] is None
    assert not init.done()
    await asyncio.wait_for(engine.approve(), BOUND)
    assert engine.status.status != "AwaitingApproval"
    await asyncio.wait_for(init, BOUND)
    await _until(engine, "Running")
    assert await _rows(engine, "SELECT s FROM v2") == [{"s": 6}]


async def test_approve_when_nothing_awaits_returns_at_once(tmp_path: Path) -> None:
    engine = _engine(_checkpoint(tmp_path), "await_approval", program=OLD)
    await engine.initialize()
    assert engine.status.status == "Running"
    await asyncio.wait_for(engine.approve(), BOUND)
    assert await _rows(engine, "SELECT COUNT(*) AS n FROM t2") == [{"n": 1}]


@pytest.mark.parametrize("policy", ["reject", "await_approval"])
async def test_an_unchanged_program_restores_under_any_policy(tmp_path: Path, policy: str) -> None:
    engine = _engine(_checkpoint(tmp_path), policy, program=OLD)
    await engine.initialize()
    assert engine.status.status == "Running"
    assert await _rows(engine, "SELECT c FROM v1") == [{"c": 3}]


async def test_a_suspend_while_awaiting_approval_is_done_at_once(tmp_path: Path) -> None:
    store = _checkpoint(tmp_path)
    before = [c.uuid for c in store.list()]
    engine = _engine(store, "await_approval")
    init = asyncio.create_task(engine.initialize())
    await _until(engine, "AwaitingApproval")
    await engine.set_desired("Suspended")
    assert engine.status.status == "Suspended"
    # The restored checkpoint stands for the suspend: none is written.
    assert [c.uuid for c in store.list()] == before
    await asyncio.wait_for(engine.approve(), BOUND)  # too late: nothing bootstraps
    await asyncio.wait_for(init, BOUND)
    assert engine.status.status == "Suspended"


@pytest.mark.parametrize("policy", ["allow", "reject", "await_approval"])
async def test_a_new_view_over_an_unchanged_non_materialized_table_is_not_bootstrapped(
    tmp_path: Path, policy: str
) -> None:
    # Feldera keeps no contents for a non-materialized table, so it refuses to
    # replay one into a new view, before looking at the policy; Stopcock too.
    plain = OLD.replace("(x INTEGER) WITH ('materialized' = 'true')", "(x INTEGER)")
    store = _checkpoint_of(tmp_path, plain)
    before = [c.uuid for c in store.list()]
    changed = plain + "CREATE MATERIALIZED VIEW v2 AS SELECT MAX(x) AS m FROM t1;"
    engine = _engine(store, policy, changed)
    await engine.initialize()
    status = engine.status
    assert status.status == "Failed" and status.error is not None
    assert status.error["error_code"] == "BootstrapNotAllowed"
    assert "not materialized" in status.error["message"] and "'t1'" in status.error["message"]
    assert [c.uuid for c in store.list()] == before
    # A new view over a materialized table bootstraps as usual.
    engine = _engine(_checkpoint(tmp_path / "other"), "allow")
    await engine.initialize()
    assert engine.status.status == "Running"


def _checkpoint_of(storage: Path, program: str) -> CheckpointStore:
    store = CheckpointStore(storage, Faults())
    memdb = MemoryDatabase.open()
    load_program(memdb.db, program)
    bootstrap.stamp(memdb.db, program)
    memdb.db.execute("INSERT INTO t1 VALUES (1), (2), (3)")
    store.commit(store.stage(memdb), processed_records=3, sequence_number=0)
    memdb.db.close()
    return store


# What an older Stopcock ran: the program's SQL as written, with no stamp.
LEGACY = (
    "CREATE TABLE t (id INTEGER NOT NULL, name TEXT) WITH ('materialized' = 'true'); "
    "CREATE MATERIALIZED VIEW v AS SELECT * FROM t;"
)
LEGACY_AS_WRITTEN = (
    "CREATE TABLE t (id INTEGER NOT NULL, name TEXT); CREATE VIEW v AS SELECT * FROM t;"
)


def _legacy_checkpoint(storage: Path) -> CheckpointStore:
    store = CheckpointStore(storage, Faults())
    memdb = MemoryDatabase.open()
    memdb.db.execute("PRAGMA user_version=1")  # what older runtimes left there
    memdb.db.executescript(LEGACY_AS_WRITTEN)
    memdb.db.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    store.commit(store.stage(memdb), processed_records=2, sequence_number=0)
    memdb.db.close()
    return store


@pytest.mark.parametrize("policy", ["allow", "reject", "await_approval"])
async def test_a_checkpoint_from_an_older_stopcock_restores_its_rows_as_they_were(
    tmp_path: Path, policy: str
) -> None:
    # Its DDL text differs from what the translator writes today; its tables'
    # columns do not: nothing to bootstrap, nothing to approve, nothing lost.
    engine = _engine(_legacy_checkpoint(tmp_path), policy, program=LEGACY)
    await engine.initialize()
    assert engine.status.status == "Running"
    assert await _rows(engine, "SELECT id, name FROM v ORDER BY id") == [
        {"id": 1, "name": "a"},
        {"id": 2, "name": "b"},
    ]


async def test_a_changed_table_in_an_older_checkpoint_is_still_a_bootstrap(
    tmp_path: Path,
) -> None:
    changed = LEGACY.replace("name TEXT)", "name TEXT, extra INT)")
    engine = _engine(_legacy_checkpoint(tmp_path), "await_approval", program=changed)
    init = asyncio.create_task(engine.initialize())
    awaiting = await _until(engine, "AwaitingApproval")
    assert awaiting.details is not None
    diff = awaiting.details["approval_diff"]["program_diff"]
    assert (diff["modified_tables"], diff["modified_views"]) == (["t"], ["v"])
    await asyncio.wait_for(engine.approve(), BOUND)
    await asyncio.wait_for(init, BOUND)
    assert await _rows(engine, "SELECT COUNT(*) AS n FROM t") == [{"n": 0}]
