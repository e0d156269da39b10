"""Cutting a streamed body into updates, and spooling the checked rows (unit tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stopcock.runtime import spool as spool_module
from stopcock.runtime.data import DataError
from stopcock.runtime.splitter import UpdateSplitter
from stopcock.runtime.spool import Spool

ROWS = st.lists(
    st.fixed_dictionaries(
        {"id": st.integers(), "name": st.text(alphabet=st.sampled_from('ab},{ "\\\n[]'))}
    ),
    max_size=40,
)


def split(body: bytes, array: bool, cuts: list[int]) -> list[Any]:
    splitter = UpdateSplitter(array, "t")
    updates: list[Any] = []
    previous = 0
    for cut in sorted({c % (len(body) + 1) for c in cuts}):
        updates += splitter.feed(body[previous:cut])
        previous = cut
    updates += splitter.feed(body[previous:])
    return updates + splitter.finish()


@settings(max_examples=200, deadline=None)
@given(rows=ROWS, cuts=st.lists(st.integers(min_value=0), max_size=12), array=st.booleans())
def test_any_chunking_gives_the_updates_of_the_whole_body(
    rows: list[dict[str, Any]], cuts: list[int], array: bool
) -> None:
    if array:
        body = json.dumps(rows, separators=(",", ":") if cuts and cuts[0] % 2 else None).encode()
    else:
        body = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    assert split(body, array, cuts) == rows


@pytest.mark.parametrize(
    ("body", "array"),
    [
        (b'{"id": 1}\n{"id": 2} {"id": 3}\n', False),  # two documents on one line
        (b'{"id": 1}\n1, 2\n', False),
        (b'{"id": 1},', True),  # not an array
        (b'[{"id": 1},', True),  # never closed
        (b'[{"id": 1},]', True),
    ],
)
def test_a_malformed_body_is_refused_whatever_the_chunks(body: bytes, array: bool) -> None:
    for size in (1, 3, len(body)):
        with pytest.raises(DataError) as info:
            split(body, array, list(range(0, len(body), size)))
        assert info.value.code == "InvalidIngressData"


def test_the_spool_spills_to_a_file_past_its_memory_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "MEMORY_BYTES", 1000)
    spool = Spool(tmp_path)
    batches = [[(i, "x" * 50)] * 10 for i in range(20)]
    for batch in batches:
        spool.add(batch)
    assert spool.rows == 200
    assert list(spool.batches()) == batches
    assert not list(tmp_path.iterdir())  # the spill file is unlinked
    spool.close()
