"""Query answers as Feldera's `format=text` prints them: an ASCII table.

Feldera (crates/adapters/src/adhoc/format.rs, executor.rs stream_text_query)
draws each record batch with comfy_table, preset "||--+-++|    ++++++":
`|` borders and column separators, `-` rules with `+` corners, one rule
under the header, none between rows, a space of padding either side, cells
left-aligned, a cell longer than 64 bytes cut there and ended with "...",
NULL as an empty cell. The first batch sends its table but for the bottom
rule; each later one its rows (its own table without the first three lines)
but for the bottom rule; the last bottom rule ends the answer, with no
newline after it. An empty answer is the header's table alone.

Columns are as wide as their widest cell *within a batch*, so a long answer
is several tables of maybe different widths stitched together, as in
Feldera (whose batches hold up to 8192 rows; Stopcock's chunks, see
queries.QUERY_CHUNK_ROWS, fewer).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from typing import Any

CELL_MAX_BYTES = 64


def cell(value: Any) -> str:
    """A value as arrow's display formatter writes it (the common types)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, bytes):
        return value.hex()
    text = str(value)
    raw = text.encode()
    if len(raw) > CELL_MAX_BYTES:
        text = raw[:CELL_MAX_BYTES].decode(errors="ignore") + "..."
    return text


def _width(text: str) -> int:
    """Columns `text` takes in a terminal (wide East Asian characters take two)."""
    return sum(_char_width(ch) for ch in text)


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def table_lines(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """The whole table, one string per line, as comfy_table draws it with Feldera's preset."""
    if not names:
        return []
    cells = [[cell(v).split("\n") for v in row] for row in rows]
    header = [name.split("\n") for name in names]
    widths = [max(_width(line) for line in lines) for lines in header]
    for row_cells in cells:
        for i, lines in enumerate(row_cells):
            widths[i] = max(widths[i], *(_width(line) for line in lines))
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def draw(row: list[list[str]]) -> list[str]:
        height = max(len(lines) for lines in row)
        out = []
        for k in range(height):
            parts = []
            for lines, w in zip(row, widths, strict=True):
                text = lines[k] if k < len(lines) else ""
                parts.append(" " + text + " " * (w - _width(text)) + " ")
            out.append("|" + "|".join(parts) + "|")
        return out

    lines = [rule, *draw(header), rule]
    for row_cells in cells:
        lines.extend(draw(row_cells))
    lines.append(rule)
    return lines


class TextTable:
    """Feldera's text answer, chunk by chunk (see the module's docstring)."""

    def __init__(self) -> None:
        self._sent_header = False
        self._last_line: str | None = None

    def rows(self, names: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
        lines = table_lines(names, rows)
        if self._sent_header:
            lines = lines[3:]
        self._sent_header = True
        if not lines:
            return b""
        self._last_line = lines[-1]
        return ("\n".join(lines[:-1]) + "\n").encode()

    def end(self, names: Sequence[str]) -> bytes:
        if not self._sent_header:
            return "\n".join(table_lines(names, [])).encode()
        return (self._last_line or "").encode()


def render(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """A whole answer in one piece."""
    table = TextTable()
    return table.rows(names, rows) + table.end(names)
