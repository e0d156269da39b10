"""Program "compilation": SQL validation and the schema it reports."""

from __future__ import annotations

from stopcock.program import compile_program


def test_valid_program_describes_tables_and_views() -> None:
    result = compile_program(
        "CREATE TABLE t (id INTEGER NOT NULL, name TEXT); CREATE VIEW v AS SELECT id FROM t;"
    )
    assert result.ok
    assert result.program_info is not None
    schema = result.program_info["schema"]
    assert [t["name"] for t in schema["inputs"]] == ["t"]
    assert [v["name"] for v in schema["outputs"]] == ["v"]
    fields = schema["inputs"][0]["fields"]
    assert fields[0] == {
        "name": "id",
        "case_sensitive": False,
        "columntype": {"type": "INTEGER", "nullable": False},
    }


def test_syntax_error_is_reported_with_the_engines_message() -> None:
    result = compile_program("CREATE TABLE t (id INTEGER,,);")
    assert not result.ok
    messages = result.program_error["sql_compilation"]["messages"]
    assert "syntax error" in messages[0]["message"]


def test_view_over_missing_column_fails_at_compile_time() -> None:
    result = compile_program("CREATE TABLE t (a INT); CREATE VIEW v AS SELECT b FROM t;")
    assert not result.ok
    assert "no such column" in result.program_error["sql_compilation"]["messages"][0]["message"]


def test_statements_other_than_ddl_are_refused() -> None:
    for program in (
        "CREATE TABLE t (a INT); INSERT INTO t VALUES (1);",
        "ATTACH DATABASE '/tmp/x.db' AS x;",
        "PRAGMA journal_mode=OFF;",
    ):
        result = compile_program(program)
        assert not result.ok, program
        assert "not authorized" in result.program_error["sql_compilation"]["messages"][0]["message"]
