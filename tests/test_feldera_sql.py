"""Feldera SQL programs: translation to SQLite, program_info, errors, and end to end."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from feldera import Pipeline, PipelineBuilder
from feldera.enums import PipelineFieldSelector
from stopcock.program import catalog, compile_program, load_program, table_ddl, validate_program
from stopcock.sql.adhoc import QueryRefused, to_sqlite
from stopcock.sql.messages import Span, snippet

from tests.support import wait_until
from tests.test_feldera_sdk import AUTH_OFF, WAIT_S, Sdk, api_error, sdk_stack

PROGRAM = """
CREATE TABLE "Orders" (
    id BIGINT NOT NULL PRIMARY KEY,
    "Amount" DECIMAL(10, 2),
    customer VARCHAR,
    placed TIMESTAMP,
    paid BOOLEAN,
    tags VARCHAR ARRAY,
    extra MAP<VARCHAR, INT>
) WITH ('materialized' = 'true', 'skip_unused_columns' = 'true');
CREATE TABLE Raw (x INT);
CREATE MATERIALIZED VIEW paid_orders AS
    SELECT id, "Amount", customer AS "Who" FROM "Orders" WHERE paid;
CREATE LOCAL VIEW counted AS SELECT COUNT(*) AS n FROM "Orders";
CREATE VIEW plain AS SELECT n FROM counted;
""".strip()


def _info(program: str = PROGRAM) -> dict[str, Any]:
    result = compile_program(program)
    assert result.ok, result.program_error
    assert result.program_info is not None
    return result.program_info


def _error(program: str) -> dict[str, Any]:
    result = compile_program(program)
    assert not result.ok, program
    assert result.program_error["rust_compilation"] is None
    (message,) = result.program_error["sql_compilation"]["messages"]
    assert isinstance(message, dict)
    return message


# -- program_info ------------------------------------------------------------


def test_program_info_has_feldera_top_level_keys() -> None:
    info = _info()
    assert set(info) == {
        "schema",
        "main_rust",
        "udf_stubs",
        "dataflow",
        "input_connectors",
        "output_connectors",
    }
    assert (info["input_connectors"], info["output_connectors"]) == ({}, {})


def test_tables_are_inputs_and_local_views_are_not_outputs() -> None:
    schema = _info()["schema"]
    assert [(r["name"], r["case_sensitive"]) for r in schema["inputs"]] == [
        ("Orders", True),
        ("raw", False),  # unquoted: reported lowercased
    ]
    assert [r["name"] for r in schema["outputs"]] == ["paid_orders", "plain"]
    assert [r["materialized"] for r in schema["inputs"]] == [True, False]
    assert [r["materialized"] for r in schema["outputs"]] == [True, False]


def test_feldera_types_and_names_are_reported() -> None:
    orders = _info()["schema"]["inputs"][0]
    assert orders["primary_key"] == ["id"]
    by_name = {f["name"]: f for f in orders["fields"]}
    assert list(by_name) == ["id", "Amount", "customer", "placed", "paid", "tags", "extra"]
    assert by_name["Amount"]["case_sensitive"] is True
    assert by_name["id"]["case_sensitive"] is False
    types = {n: (f["columntype"]["type"], f["columntype"]["nullable"]) for n, f in by_name.items()}
    assert types == {
        "id": ("BIGINT", False),
        "Amount": ("DECIMAL", True),
        "customer": ("VARCHAR", True),
        "placed": ("TIMESTAMP", True),
        "paid": ("BOOLEAN", True),
        "tags": ("ARRAY", True),
        "extra": ("MAP", True),
    }
    amount = by_name["Amount"]["columntype"]
    assert (amount["precision"], amount["scale"]) == (10, 2)
    assert by_name["customer"]["columntype"]["precision"] == -1
    assert by_name["tags"]["columntype"]["component"]["type"] == "VARCHAR"
    extra = by_name["extra"]["columntype"]
    assert (extra["key"]["type"], extra["value"]["type"]) == ("VARCHAR", "INTEGER")


def test_properties_keep_values_and_positions() -> None:
    props = _info()["schema"]["inputs"][0]["properties"]
    assert set(props) == {"materialized", "skip_unused_columns"}
    materialized = props["materialized"]
    assert materialized["value"] == "true"
    # Line 9 of PROGRAM: `) WITH ('materialized' = 'true', ...`
    assert materialized["key_position"]["start_line_number"] == 9
    assert materialized["value_position"]["start_column"] > 9


def test_view_columns_read_straight_from_a_table_keep_its_types() -> None:
    view = _info()["schema"]["outputs"][0]
    fields = {f["name"]: f for f in view["fields"]}
    assert list(fields) == ["id", "Amount", "Who"]
    assert fields["Amount"]["columntype"]["type"] == "DECIMAL"
    assert fields["Who"]["case_sensitive"] is True
    assert fields["Who"]["columntype"]["type"] == "VARCHAR"


# -- translation --------------------------------------------------------------


def test_sqlite_ddl_is_deterministic_and_canonical() -> None:
    ddl = table_ddl(PROGRAM)
    assert ddl == table_ddl(PROGRAM.replace("    ", "  "))
    assert ddl["raw"] == 'CREATE TABLE "raw" ("x" INTEGER)'
    assert ddl["Orders"] == (
        'CREATE TABLE "Orders" ("id" INTEGER NOT NULL, "Amount" NUMERIC, "customer" TEXT, '
        '"placed" TEXT, "paid" BOOLEAN, "tags" TEXT, "extra" TEXT, PRIMARY KEY ("id"))'
    )


def test_load_program_installs_tables_and_views() -> None:
    db = sqlite3.connect(":memory:")
    compiled = load_program(db, PROGRAM)
    names = {
        r[0] for r in db.execute("SELECT name FROM sqlite_schema WHERE type IN ('table','view')")
    }
    assert names == {"Orders", "raw", "paid_orders", "counted", "plain"}
    assert [r.name for r in compiled.relations][:2] == ["Orders", "raw"]
    with pytest.raises(sqlite3.Error):
        load_program(sqlite3.connect(":memory:"), "CREATE TABLE t (x INT,,);")


def test_adhoc_queries_resolve_names_and_refuse_unmaterialized_relations() -> None:
    compiled = catalog(PROGRAM)
    db = sqlite3.connect(":memory:")
    load_program(db, PROGRAM)
    db.execute("""INSERT INTO "Orders" (id, "Amount", paid) VALUES (1, 2.5, 1), (2, 3, 0)""")
    sql = to_sqlite(compiled, 'SELECT ID, "Amount" FROM PAID_ORDERS')
    assert db.execute(sql).fetchall() == [(1, 2.5)]
    for relation in ("raw", "plain", "counted"):
        with pytest.raises(QueryRefused, match="non-materialized source"):
            to_sqlite(compiled, f"SELECT * FROM {relation}")
    with pytest.raises(QueryRefused, match="Object 'orders' not found"):
        to_sqlite(compiled, "SELECT * FROM orders")  # unquoted: not the quoted "Orders"
    with pytest.raises(QueryRefused, match="only read"):
        to_sqlite(compiled, 'DELETE FROM "Orders"')


# -- errors --------------------------------------------------------------------


def test_unknown_relation_is_reported_as_calcite_does() -> None:
    code = (
        "CREATE TABLE student(\n    id INT,\n    name STRING\n);\n"
        "CREATE VIEW s AS SELECT * FROM blah;"
    )
    message = _error(code)
    assert message["error_type"] == "Compilation error"
    assert message["message"] == (
        "From line 5, column 32 to line 5, column 35: Object 'blah' not found"
    )
    assert message["snippet"] == (
        "    4|);\n    5|CREATE VIEW s AS SELECT * FROM blah;\n" + " " * 37 + "^^^^\n"
    )


def test_snippet_of_a_multi_line_span() -> None:
    code = "\n".join(f"line {i}" for i in range(1, 10))
    assert snippet(code, Span(2, 1, 3, 4)) == "    2|line 2\n    3|line 3\n"
    assert snippet(code, Span(1, 1, 8, 1)).splitlines()[2] == "      ..."


@pytest.mark.parametrize(
    ("program", "error_type", "needle"),
    [
        (
            "CREATE TABLE t (x INT) WITH "
            """('connectors' = '[{"transport": {"name": "kafka_input"}}]')""",
            "Not yet implemented",
            "'kafka_input'",
        ),
        ("CREATE TABLE t (x INT LATENESS INTERVAL 1 HOUR)", "Not yet implemented", "LATENESS"),
        (
            "CREATE TABLE t (x INT); CREATE VIEW v AS SELECT x FROM t;\nLATENESS v.x 0;",
            "Not yet implemented",
            "LATENESS (on 'v.x')",
        ),
        ("CREATE FUNCTION f(x INT) RETURNS INT", "Not yet implemented", "Rust UDF"),
        ("DECLARE RECURSIVE VIEW v (x INT);", "Not yet implemented", "Recursive view 'v'"),
        ('CREATE TABLE t (x INT); CREATE TABLE "T" (y INT)', "Compilation error", 'Table "T"'),
        ('CREATE TABLE t (x INT, "X" INT)', "Compilation error", 'Columns "X" and "x"'),
        ("CREATE TABLE t (x INT); CREATE TABLE T (y INT)", "Compilation error", "Duplicate"),
        ("create taabl;", "Error parsing SQL", 'Encountered "taabl"'),
        ("CREATE TABLE t (a INT); CREATE VIEW v AS SELECT b FROM t;", "Compilation error", "b"),
        (
            "CREATE TABLE t (a INT); CREATE VIEW v AS SELECT ARRAY_AGG(a) FROM t;",
            "Not yet implemented",
            "ARRAY_AGG",
        ),
        ("CREATE TABLE t (a INT); INSERT INTO t VALUES (1);", "Error parsing SQL", "INSERT"),
    ],
)
def test_what_the_engine_cannot_honour_fails_by_name(
    program: str, error_type: str, needle: str
) -> None:
    message = _error(program)
    assert message["error_type"] == error_type
    assert needle in message["message"]


def test_validate_program_answers_in_feldera_shape() -> None:
    ok = validate_program(PROGRAM)
    assert list(ok) == ["Success"]
    info = ok["Success"]["program_info"]
    assert info["dataflow"] is None and "main_rust" not in info and "udf_stubs" not in info
    bad = validate_program("CREATE MATERIALIZED VIEW v AS SELECT * FROM no_such_table;")
    assert bad["SqlError"]["info"]["exit_code"] == 1
    assert "no_such_table" in bad["SqlError"]["info"]["messages"][0]["message"]
    assert list(validate_program("", runtime_version="v0.1.0")) == ["SystemError"]


# -- end to end: the real SDK, Envoy and runtime ---------------------------------


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sdk]:
    with sdk_stack(tmp_path_factory.mktemp("sdk-sql"), AUTH_OFF) as s:
        yield s


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_a_feldera_program_runs_end_to_end(sdk: Sdk, name: str) -> None:
    p: Pipeline = PipelineBuilder(sdk.client, name, PROGRAM).create()
    info = sdk.client.get_pipeline(name, PipelineFieldSelector.ALL).program_info
    assert [r["name"] for r in info["schema"]["outputs"]] == ["paid_orders", "plain"]
    p.start(timeout_s=WAIT_S)
    p.input_json(
        '"Orders"',
        [
            {
                "id": 1,
                "Amount": 12.5,
                "customer": "ann",
                "placed": "2024-01-02 03:04:05",
                "paid": True,
            },
            {"id": 2, "Amount": 3, "customer": "bob", "paid": False},
        ],
    )
    p.input_json("RAW", [{"x": 7}])  # unquoted: any case
    rows = list(p.query('SELECT id, "Amount", "Who" FROM paid_orders'))
    assert rows == [{"id": 1, "Amount": 12.5, "Who": "ann"}]
    assert Decimal(str(rows[0]["Amount"])) == Decimal("12.5")
    api_error(lambda: p.query("SELECT * FROM raw"), 400, "InvalidQuery")
    api_error(lambda: p.input_json("orders", [{"id": 3}]), 404, "UnknownInputTable")
    p.stop(force=True, timeout_s=WAIT_S)


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_a_connector_is_refused_with_its_name(sdk: Sdk, name: str) -> None:
    sql = """CREATE TABLE t (x INT) WITH ('connectors' = '[{"transport": {"name": "datagen"}}]');"""
    with pytest.raises(RuntimeError, match=r"Not yet implemented\nConnectors .*'datagen'"):
        PipelineBuilder(sdk.client, name, sql).create()


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_validate_program_through_envoy(sdk: Sdk, tmp_path: Path) -> None:
    del tmp_path
    assert list(sdk.client.validate_program(PROGRAM)) == ["Success"]
    invalid = sdk.client.validate_program("CREATE MATERIALIZED VIEW v AS SELECT * FROM nope;")
    assert invalid["SqlError"]["info"]["messages"]


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_a_compile_bumps_refresh_version_twice_as_feldera(sdk: Sdk, name: str) -> None:
    # Feldera: CompilingSql (no bump), SqlCompiled (bump), CompilingRust (no bump), Success (bump).
    r = sdk.stack.rest.post("/v0/pipelines", json={"name": name, "program_code": ""})
    assert r.status_code == 201 and r.json()["refresh_version"] == 1
    done = wait_until(
        lambda: (p := sdk.stack.get(name))["program_status"] == "Success" and p, "compiled"
    )
    assert done["refresh_version"] == 3
    assert done["program_error"]["sql_compilation"] == {"exit_code": 0, "messages": []}
    assert done["program_error"]["rust_compilation"]["exit_code"] == 0


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_rust_udfs_fail_as_a_rust_compilation(sdk: Sdk, name: str) -> None:
    body = {"name": name, "program_code": "CREATE TABLE t (x INT);", "udf_rust": "Davy Jones"}
    assert sdk.stack.rest.post("/v0/pipelines", json=body).status_code == 201
    done = wait_until(
        lambda: (p := sdk.stack.get(name))["program_status"] == "RustError" and p, "RustError"
    )
    assert done["program_error"]["sql_compilation"]["exit_code"] == 0
    assert "Davy Jones" in done["program_error"]["rust_compilation"]["stderr"]
    assert done["program_info"]["schema"]["inputs"][0]["name"] == "t"
