"""The fence's parts without a process: epoch parsing, the epoch file, supersession.

The runtime process itself is tested in test_runtime_epoch.py.
"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest
from stopcock.contract.fencing import EPOCH_FILE, EPOCH_METADATA, MAX_EPOCH, parse_epoch
from stopcock.contract.runtime_spec import SPEC_FILE, RuntimeSpec
from stopcock.runtime.fence import Fence, StaleOwner, presented_epoch, write_epoch


@pytest.mark.parametrize(
    ("text", "epoch"),
    [("0", 0), ("7", 7), (b"42", 42), ("007", 7), (str(MAX_EPOCH), MAX_EPOCH)],
)
def test_an_epoch_is_a_plain_decimal(text: str | bytes, epoch: int) -> None:
    assert parse_epoch(text) == epoch


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-1",
        "+1",
        " 1",
        "1 ",
        "1.0",
        "1e3",
        "0x10",
        "1_000",
        "\u0661",
        "abc",
        str(MAX_EPOCH + 1),
    ],
)
def test_anything_else_is_malformed(text: str) -> None:
    with pytest.raises(ValueError, match=EPOCH_METADATA):
        parse_epoch(text)


def test_the_epoch_header_is_optional_but_single() -> None:
    token = ("x-stopcock-runtime-token", "secret")
    assert presented_epoch(None) is None
    assert presented_epoch([token]) is None
    assert presented_epoch([token, (EPOCH_METADATA, "3")]) == 3
    with pytest.raises(ValueError, match="2 times"):
        presented_epoch([(EPOCH_METADATA, "3"), (EPOCH_METADATA, "4")])


def test_a_spec_without_an_epoch_reads_as_epoch_0(tmp_path: Path) -> None:
    spec = RuntimeSpec("p", "n", "d", "CREATE TABLE t (id INT);", {}, "Running", "s", epoch=5)
    spec.write(tmp_path)
    assert RuntimeSpec.read(tmp_path).epoch == 5
    raw = json.loads((tmp_path / SPEC_FILE).read_text())
    del raw["epoch"]  # what a manager before leases wrote
    (tmp_path / SPEC_FILE).write_text(json.dumps(raw))
    assert RuntimeSpec.read(tmp_path).epoch == 0


def test_the_fence_starts_at_the_higher_of_spec_and_file(tmp_path: Path) -> None:
    assert Fence.load(tmp_path, 3).highest == 3  # no file yet
    write_epoch(tmp_path, 5)
    assert Fence.load(tmp_path, 3).highest == 5
    assert Fence.load(tmp_path, 9).highest == 9
    (tmp_path / EPOCH_FILE).write_text("five\n")
    with pytest.raises(ValueError):
        Fence.load(tmp_path, 3)  # starting unfenced could obey a stale owner


async def test_admit_records_a_raise_before_it_counts(tmp_path: Path) -> None:
    fence = Fence(tmp_path, 2)
    fence.admit(2)
    assert not (tmp_path / EPOCH_FILE).exists()  # nothing new to record
    fence.admit(4)
    assert (tmp_path / EPOCH_FILE).read_text() == "4\n"
    assert stat.S_IMODE((tmp_path / EPOCH_FILE).stat().st_mode) == 0o600
    assert not (tmp_path / f"{EPOCH_FILE}.tmp").exists()
    with pytest.raises(StaleOwner) as info:
        fence.admit(3)
    assert info.value.body.details == {"epoch": 3, "highest_epoch": 4}
    assert fence.highest == 4
    assert (tmp_path / EPOCH_FILE).read_text() == "4\n"


async def test_admit_that_cannot_record_does_not_raise_the_fence(tmp_path: Path) -> None:
    fence = Fence(tmp_path / "gone", 2)
    with pytest.raises(OSError):
        fence.admit(3)
    assert fence.highest == 2


async def test_a_raise_wakes_whoever_waits_on_a_lower_epoch(tmp_path: Path) -> None:
    fence = Fence(tmp_path, 1)
    woken = asyncio.ensure_future(fence.superseded(1))
    await asyncio.sleep(0)  # one turn of the loop: the task now waits on the fence's event
    assert not woken.done()
    fence.admit(2)
    await woken


async def test_work_ends_when_a_higher_epoch_is_recorded(tmp_path: Path) -> None:
    fence = Fence(tmp_path, 1)
    never = asyncio.Event()
    waiting = asyncio.ensure_future(fence.unless_superseded(1, never.wait()))
    unfenced = asyncio.ensure_future(fence.unless_superseded(None, never.wait()))
    current = asyncio.ensure_future(fence.unless_superseded(2, never.wait()))
    fence.admit(2)
    with pytest.raises(StaleOwner) as info:
        await waiting
    assert info.value.body.details == {"epoch": 1, "highest_epoch": 2}
    assert not unfenced.done() and not current.done()
    unfenced.cancel()
    current.cancel()
    assert await fence.unless_superseded(2, asyncio.sleep(0, "done")) == "done"
