"""The shape of a pipeline's program_error (Feldera's): one member per compiler stage.

Feldera's pipeline-manager (db/types/program.rs, ProgramError) fills
sql_compilation {exit_code, messages} once SQL compilation ran (exit_code 0
and the warnings on success) and rust_compilation {exit_code, stdout,
stderr} once the Rust build ran; a successfully compiled program has both.
Stopcock has no Rust stage: a successful compile reports an empty one.
"""

from __future__ import annotations

from typing import Any


def empty_program_error() -> dict[str, Any]:
    return {"sql_compilation": None, "rust_compilation": None, "system_error": None}


def sql_compilation(exit_code: int, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"exit_code": exit_code, "messages": messages}


def compiled_program_error(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """program_error of a program that compiled (status Success)."""
    return {
        "sql_compilation": sql_compilation(0, messages),
        "rust_compilation": {"exit_code": 0, "stdout": "", "stderr": ""},
        "system_error": None,
    }
