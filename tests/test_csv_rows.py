"""Cutting a streamed CSV body into rows by Feldera's rules (unit tests)."""

from __future__ import annotations

import csv
import io
import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stopcock.runtime import data
from stopcock.runtime.csv_rows import CsvRecords, csv_columns

NAMES = st.text(alphabet=st.sampled_from('ab,"\n\r x'), max_size=12)
ROWS = st.lists(st.tuples(st.integers(-(2**31), 2**31 - 1), NAMES), max_size=30)


def records(*columns: str) -> CsvRecords:
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE TABLE t ({', '.join(columns)})")
    return CsvRecords("t", csv_columns(db, data.table_shape(db, "t")))


def split(reader: CsvRecords, body: bytes, cuts: list[int]) -> list[Any]:
    rows: list[Any] = []
    previous = 0
    for cut in sorted({c % (len(body) + 1) for c in cuts}):
        rows += reader.feed(body[previous:cut])
        previous = cut
    rows += reader.feed(body[previous:])
    rows += reader.finish()
    reader.check()
    return rows


@settings(max_examples=200, deadline=None)
@given(rows=ROWS, cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_any_chunking_gives_the_rows_of_the_whole_body(
    rows: list[tuple[int, str]], cuts: list[int]
) -> None:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC).writerows(rows)
    got = split(
        records("id INTEGER NOT NULL", "name VARCHAR NOT NULL"), text.getvalue().encode(), cuts
    )
    assert got == rows


def test_bad_records_are_counted_with_their_event_numbers() -> None:
    reader = records("id INTEGER", "ok BOOLEAN")
    with pytest.raises(data.DataError) as info:
        split(reader, b"1,true\n\nx,true\n2,yes\n" + b"y\n" * 10, [3, 9])
    error = info.value
    assert (error.http_status, error.code) == (400, "ParseErrors")
    assert error.details["num_errors"] == 12
    reported = error.details["errors"]
    assert [(e["event_number"], e["field"]) for e in reported[:2]] == [(3, "id"), (4, "ok")]
    assert len(reported) == 5  # the first few
    assert error.message.startswith("Errors parsing input data (reporting 5 out of 12")


@pytest.mark.parametrize(
    ("declared", "field", "expected"),
    [
        ("TINYINT", "127", 127),
        ("DOUBLE", "-Inf", float("-inf")),
        ("DECIMAL(10, 2)", "1.25", 1.25),
        ("DATE", " 1-2-3 ", "0001-02-03"),
        ("TIME", "1:2:3.123456789", "01:02:03.123456789"),
        ("TIMESTAMP", "2024-02-25T12:12:33.1234567", "2024-02-25 12:12:33.123456"),
        ("VARCHAR", "", ""),
        ("VARCHAR", "null", None),
        ("VARCHAR NOT NULL", "null", "null"),
        ("BOOLEAN", "", None),
    ],
)
def test_fields_read_as_their_column_types(declared: str, field: str, expected: Any) -> None:
    # A second column, so that an empty field is not a blank line (skipped).
    reader = records(f"c {declared}", "d INTEGER")
    assert split(reader, field.encode() + b",\n", []) == [(expected, None)]


@pytest.mark.parametrize(
    ("declared", "field"),
    [
        ("TINYINT", "128"),
        ("INTEGER", "1_000"),
        ("INTEGER", " 1"),
        ("BOOLEAN", "TRUE"),
        ("DATE", "1997-02-29"),
        ("TIME", "24:00:00"),
        ("DOUBLE", "1e"),
        ("INTEGER NOT NULL", ""),
    ],
)
def test_bad_fields_are_refused(declared: str, field: str) -> None:
    with pytest.raises(data.DataError):
        split(records(f"c {declared}", "d INTEGER"), field.encode() + b",\n", [])
