"""Ad-hoc INSERT and format=text through the real Envoy, runtime and Feldera SDK.

Feldera's SDK sends `Pipeline.execute("INSERT ...")` and `query_tabular` as
GET /query?format=text; `query("INSERT ...")` as format=json. The rows go
through the ingress path (tests/test_data.py has its rules).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest
from feldera import Pipeline, PipelineBuilder

from tests.test_feldera_sdk import AUTH_OFF, WAIT_S, Sdk, api_error, sdk_stack

PROGRAM = """
CREATE TABLE t1 (x INT NOT NULL, s VARCHAR) WITH ('materialized' = 'true');
CREATE TABLE "Plain" (y BIGINT);
CREATE MATERIALIZED VIEW v1 AS SELECT COUNT(*) AS c FROM t1;
CREATE MATERIALIZED VIEW plain_sum AS SELECT SUM(y) AS total FROM "Plain";
""".strip()


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sdk]:
    with sdk_stack(tmp_path_factory.mktemp("sdk-adhoc"), AUTH_OFF) as s:
        yield s


def started(sdk: Sdk, name: str) -> Pipeline:
    p: Pipeline = PipelineBuilder(sdk.client, name, PROGRAM).create()
    p.start(timeout_s=WAIT_S)
    return p


def xs(p: Pipeline) -> list[object]:
    return [r["x"] for r in p.query("SELECT x FROM t1 ORDER BY x")]


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_execute_inserts_rows_that_queries_then_see(sdk: Sdk, name: str) -> None:
    p = started(sdk, name)
    p.execute("INSERT INTO t1 VALUES (1, 'a'), (2, NULL), (3, 'c');")
    assert list(p.query("SELECT * FROM v1")) == [{"c": 3}]
    p.execute("INSERT INTO T1 (X) VALUES (4);", wait=True)  # unquoted names: any case
    assert list(p.query("SELECT x, s FROM t1 WHERE x = 4")) == [{"x": 4, "s": None}]
    # Counted as ingress is (the SDK's wait=True polls these).
    metrics = p.stats().global_metrics
    assert metrics.total_input_records == metrics.total_completed_records == 4
    # format=json answers Feldera's count row; any table takes INSERT,
    # materialized or not.
    assert list(p.query('INSERT INTO "Plain" VALUES (10), (-3)')) == [{"count": 2}]
    assert list(p.query("SELECT total FROM plain_sum")) == [{"total": 7}]
    # A long statement: the whole URL travels as request metadata through Envoy
    # (Feldera's tests insert 1,000 rows this way, ~12 KiB).
    values = ", ".join(f"({i})" for i in range(100, 1100))
    assert list(p.query(f'INSERT INTO "Plain" VALUES {values}')) == [{"count": 1000}]
    p.stop(force=True, timeout_s=WAIT_S)


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_text_answers_are_felderas_table(sdk: Sdk, name: str) -> None:
    p = started(sdk, name)
    assert list(p.query_tabular("INSERT INTO t1 VALUES (1, 'one'), (22, NULL)")) == [
        "+-------+",
        "| count |",
        "+-------+",
        "| 2     |",
        "+-------+",
    ]
    text = "\n".join(sdk.client.query_as_text(name, "SELECT x, s FROM t1 ORDER BY x"))
    assert text == (
        "+----+-----+\n| x  | s   |\n+----+-----+\n| 1  | one |\n| 22 |     |\n+----+-----+"
    )
    r = sdk.stack.rest.get(
        f"/v0/pipelines/{name}/query",
        params={"sql": "SELECT x FROM t1 WHERE x < 0", "format": "text"},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.text == "+---+\n| x |\n+---+\n+---+"  # no rows: the header alone
    p.stop(force=True, timeout_s=WAIT_S)


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_a_bad_insert_changes_nothing(sdk: Sdk, name: str) -> None:
    p = started(sdk, name)
    p.execute("INSERT INTO t1 VALUES (1, 'a')")
    # A bad value in the last row refuses the whole INSERT, as ingress does.
    err = api_error(
        lambda: p.execute("INSERT INTO t1 VALUES (2, 'b'), (NULL, 'c')"), 400, "InvalidIngressData"
    )
    assert "nothing was ingested" in err.message
    # Values are typed by their column as CSV ingress types fields.
    for bad in ("('x', 'b')", "(1.5, 'b')", "(3000000000, 'b')"):
        err = api_error(
            functools.partial(p.execute, f"INSERT INTO t1 VALUES {bad}"), 400, "InvalidIngressData"
        )
        assert "column 'x'" in err.message, bad
    for sql, words in (
        ("INSERT INTO nope VALUES (1)", "table 'nope' not found"),
        ("INSERT INTO v1 VALUES (1)", "only tables take INSERT"),
        ("INSERT INTO t1 VALUES (5)", "1 value(s) for 2 column(s)"),
        ("INSERT INTO t1 SELECT * FROM t1", "INSERT ... SELECT is not supported"),
        ("DELETE FROM t1", "DELETE is not supported"),
        ("UPDATE t1 SET x = 9", "UPDATE is not supported"),
    ):
        err = api_error(functools.partial(p.execute, sql), 400, "InvalidQuery")
        assert words in err.message, sql
    assert xs(p) == [1]
    assert p.stats().global_metrics.total_input_records == 1
    p.stop(force=True, timeout_s=WAIT_S)


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_an_insert_is_refused_while_paused_as_ingress_is(sdk: Sdk, name: str) -> None:
    p = started(sdk, name)
    p.pause(timeout_s=WAIT_S)
    err = api_error(lambda: p.execute("INSERT INTO t1 VALUES (1, 'a')"), 503, "PipelineUnavailable")
    assert "paused" in err.message
    assert list(p.query_tabular("SELECT x FROM t1")) == ["+---+", "| x |", "+---+", "+---+"]
    p.resume(timeout_s=WAIT_S)
    p.execute("INSERT INTO t1 VALUES (1, 'a')")
    assert xs(p) == [1]
    p.stop(force=True, timeout_s=WAIT_S)
