"""Program "compilation": SQL validation and the schema it reports (Feldera's shapes)."""

from __future__ import annotations

from stopcock.program import compile_program


def _message(program: str) -> dict[str, object]:
    result = compile_program(program)
    assert not result.ok, program
    assert result.program_info is None
    sql = result.program_error["sql_compilation"]
    assert sql["exit_code"] == 1
    message: dict[str, object] = sql["messages"][0]
    return message


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
    assert fields[0]["name"] == "id"
    assert fields[0]["case_sensitive"] is False
    assert fields[0]["columntype"]["type"] == "INTEGER"
    assert fields[0]["columntype"]["nullable"] is False
    assert schema["outputs"][0]["fields"][0]["columntype"]["type"] == "INTEGER"


def test_success_reports_both_compiler_stages_as_feldera_does() -> None:
    result = compile_program("CREATE TABLE t (x INT);")
    assert result.program_error == {
        "sql_compilation": {"exit_code": 0, "messages": []},
        "rust_compilation": {"exit_code": 0, "stdout": "", "stderr": ""},
        "system_error": None,
    }
    assert result.sql_compilation == {"exit_code": 0, "messages": []}


def test_syntax_error_is_reported_with_its_position() -> None:
    message = _message("CREATE TABLE t (id INTEGER,,);")
    assert message["error_type"] == "Error parsing SQL"
    assert (message["start_line_number"], message["start_column"]) == (1, 28)
    assert "^" in str(message["snippet"])


def test_view_over_missing_column_fails_at_compile_time() -> None:
    message = _message("CREATE TABLE t (a INT); CREATE VIEW v AS SELECT b FROM t;")
    assert message["message"] == (
        "From line 1, column 49 to line 1, column 49: Column 'b' not found in any table"
    )


def test_statements_other_than_ddl_are_refused() -> None:
    for program in (
        "CREATE TABLE t (a INT); INSERT INTO t VALUES (1);",
        "ATTACH DATABASE '/tmp/x.db' AS x;",
        "PRAGMA journal_mode=OFF;",
    ):
        message = _message(program)
        assert message["error_type"] == "Error parsing SQL", program
