"""Ad-hoc statements without a server: Feldera's text table and INSERT parsing."""

from __future__ import annotations

import json

import pytest
from stopcock.program import catalog
from stopcock.runtime.queries import render_whole
from stopcock.runtime.text_table import CELL_MAX_BYTES, TextTable, render, table_lines
from stopcock.sql.adhoc import Insert, QueryRefused, parse, to_sqlite

PROGRAM = """
CREATE TABLE t1 (x INT) WITH ('materialized' = 'true');
CREATE TABLE "Mixed" (id BIGINT NOT NULL, "Name" VARCHAR, day DATE, ok BOOLEAN, f DOUBLE);
CREATE MATERIALIZED VIEW v1 AS SELECT COUNT(*) AS c FROM t1;
""".strip()


# -- the text table (Feldera's comfy_table preset) ---------------------------


def test_an_inserts_count_is_felderas_table() -> None:
    # docs.feldera.com/docs/pipelines/transactions.md shows exactly this answer.
    assert render(["count"], [(1,)]).decode() == (
        "+-------+\n| count |\n+-------+\n| 1     |\n+-------+"
    )


def test_columns_are_as_wide_as_their_widest_cell_and_null_is_empty() -> None:
    got = render(["id", "name"], [(1, "ann"), (22, None), (3, "日本")]).decode()
    assert got.splitlines() == [
        "+----+------+",
        "| id | name |",
        "+----+------+",
        "| 1  | ann  |",
        "| 22 |      |",
        "| 3  | 日本 |",
        "+----+------+",
    ]
    assert not got.endswith("\n")  # Feldera sends no newline after the last rule


def test_an_empty_answer_is_the_header_alone() -> None:
    assert render(["x"], []).decode() == "+---+\n| x |\n+---+\n+---+"


def test_values_print_as_arrow_prints_them() -> None:
    (line,) = table_lines(["v"], [(True,)])[3:4]
    assert line == "| true |"
    assert table_lines(["v"], [(2.0,)])[3] == "| 2.0 |"
    assert table_lines(["v"], [(b"\x01\xab",)])[3] == "| 01ab |"
    long = "x" * (CELL_MAX_BYTES + 10)
    assert table_lines(["v"], [(long,)])[3] == "| " + "x" * CELL_MAX_BYTES + "... |"


def test_a_multi_line_cell_takes_several_lines() -> None:
    assert table_lines(["v"], [("a\nbc",)])[3:5] == ["| a  |", "| bc |"]


def test_later_chunks_send_rows_only_and_the_last_rule_ends_the_answer() -> None:
    out = TextTable()
    first = out.rows(["x"], [(1,)]).decode()
    second = out.rows(["x"], [(2,)]).decode()
    assert first == "+---+\n| x |\n+---+\n| 1 |\n"
    assert second == "| 2 |\n"
    assert out.end(["x"]).decode() == "+---+"


def test_json_count_row() -> None:
    assert [json.loads(line) for line in render_whole("json", ["count"], [(3,)]).splitlines()] == [
        {"count": 3}
    ]


# -- INSERT parsing -----------------------------------------------------------


def test_insert_values_become_rows_by_declared_column() -> None:
    compiled = catalog(PROGRAM)
    got = parse(compiled, "INSERT INTO T1 VALUES (1), (-2), (NULL);")
    assert got == Insert("t1", [{"x": 1}, {"x": -2}, {"x": None}])
    got = parse(
        compiled,
        """insert into "Mixed" (ID, "Name", day, ok, f) """
        """values (7, 'a''b', DATE '2024-01-02', TRUE, 1.5e3)""",
    )
    assert got == Insert(
        "Mixed",
        [{"id": 7, "Name": "a'b", "day": "2024-01-02", "ok": True, "f": 1500.0}],
    )


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("INSERT INTO nope VALUES (1)", "table 'nope' not found"),
        ("INSERT INTO mixed VALUES (1)", "table 'mixed' not found"),  # quoted: exact case
        ("INSERT INTO v1 VALUES (1)", "a view"),
        ("INSERT INTO t1 VALUES (1, 2)", "2 value(s) for 1 column(s)"),
        ('INSERT INTO "Mixed" (name) VALUES (1)', "no column 'name'"),
        ("INSERT INTO t1 (x, X) VALUES (1, 2)", "named twice"),
        ("INSERT INTO t1 VALUES (1 + 1)", "literal values only"),
        ("INSERT INTO t1 VALUES (1e999)", "literal values only"),
        ("INSERT INTO t1 SELECT * FROM t1", "INSERT ... SELECT is not supported"),
        ("UPDATE t1 SET x = 1", "UPDATE is not supported"),
        ("DELETE FROM t1", "DELETE is not supported"),
        ("CREATE TABLE z (a INT)", "CREATE is not supported"),
        ("INSERT INTO t1 VALUES (1); SELECT 1", "exactly one statement"),
    ],
)
def test_what_is_not_a_literal_insert_is_refused(sql: str, message: str) -> None:
    with pytest.raises(QueryRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(catalog(PROGRAM), sql)


def test_a_select_still_translates_and_to_sqlite_refuses_an_insert() -> None:
    compiled = catalog(PROGRAM)
    assert parse(compiled, "SELECT c FROM V1") == "SELECT `c` FROM `v1`"
    with pytest.raises(QueryRefused, match="only read"):
        to_sqlite(compiled, "INSERT INTO t1 VALUES (1)")
