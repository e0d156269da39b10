"""Compiler messages in Feldera's shape (SqlCompilerMessage) with Calcite's code snippets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

COMPILATION_ERROR = "Compilation error"
NOT_SUPPORTED = "Not yet implemented"
PARSE_ERROR = "Error parsing SQL"


@dataclass(frozen=True, slots=True)
class Span:
    """1-based, inclusive, as Calcite reports positions; (0, 0, 0, 0) when unknown."""

    start_line: int = 0
    start_column: int = 0
    end_line: int = 0
    end_column: int = 0

    @property
    def valid(self) -> bool:
        return self.start_line > 0

    def calcite_prefix(self) -> str:
        """How Calcite's validator prefixes a message with where it applies."""
        if not self.valid:
            return ""
        return (
            f"From line {self.start_line}, column {self.start_column} to line "
            f"{self.end_line}, column {self.end_column}: "
        )

    @classmethod
    def of_offsets(cls, code: str, start: int, end: int) -> Span:
        """The span of code[start:end + 1] (sqlglot's token offsets, end inclusive)."""

        def position(offset: int) -> tuple[int, int]:
            line = code.count("\n", 0, offset) + 1
            return line, offset - (code.rfind("\n", 0, offset) + 1) + 1

        return cls(*position(start), *position(end))


def snippet(code: str, span: Span) -> str:
    """The source around `span`, decorated as Feldera's SQL compiler does it
    (SourceFileContents.getFragment: `%5d|` line numbers, `^` under the span)."""
    if not span.valid:
        return ""
    lines = code.split("\n")
    while lines and lines[-1] == "":  # Java's String.split drops trailing empties
        lines.pop()
    start, end = span.start_line - 1, span.end_line - 1
    if start >= len(lines):
        return ""

    def numbered(i: int) -> str:
        return f"{i + 1:5d}|{lines[i]}\n"

    if start == end:
        out = ""
        if start == len(lines) - 1 and len(lines) > 1:
            out += numbered(start - 1)
        out += numbered(start)
        out += " " * (span.start_column - 1 + 6) + "^" * (span.end_column - span.start_column + 1)
        out += "\n"
        if len(lines) > start + 1:
            out += numbered(start + 1)
        return out
    end = min(end, len(lines) - 1)
    if end - start < 5:
        return "".join(numbered(i) for i in range(start, end + 1))
    return numbered(start) + numbered(start + 1) + "      ...\n" + numbered(end)


@dataclass(frozen=True, slots=True)
class Message:
    message: str
    span: Span = Span()
    error_type: str = COMPILATION_ERROR
    warning: bool = False

    def to_json(self, code: str) -> dict[str, Any]:
        return {
            "start_line_number": self.span.start_line,
            "start_column": self.span.start_column,
            "end_line_number": self.span.end_line,
            "end_column": self.span.end_column,
            "warning": self.warning,
            "error_type": self.error_type,
            "message": self.message,
            "snippet": snippet(code, self.span),
        }


class CompileError(Exception):
    """The program does not compile: `message` says why."""

    def __init__(self, message: Message) -> None:
        super().__init__(message.message)
        self.detail = message
