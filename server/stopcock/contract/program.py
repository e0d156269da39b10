"""The shape of a pipeline's program_error (Feldera's): one member per compiler stage."""

from __future__ import annotations

from typing import Any


def empty_program_error() -> dict[str, Any]:
    return {"sql_compilation": None, "rust_compilation": None, "system_error": None}
