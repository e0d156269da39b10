"""What the commands print: one-line messages, tables, JSON and YAML.

Results go to stdout (`out`, `say`, `dump`); notes about them ("no
pipelines") and errors go to stderr (`err`), so piped output is only data.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from stopcock.client.render import to_json, to_yaml

# Never wrapped: an error stays one line, and piped output keeps whole names (rich
# would otherwise cut a table to 80 columns when stdout is not a terminal).
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 10_000)


class Output(StrEnum):
    text = "text"
    json = "json"
    yaml = "yaml"


def say(text: str) -> None:
    """One line of output, flushed: --wait shows changes as they happen, even when piped."""
    print(text, flush=True)


def dump(data: Any, output: Output) -> None:
    if output is Output.yaml:
        print(to_yaml(data), end="", flush=True)
    else:
        print(to_json(data), flush=True)


def print_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Rows under column headings, without borders, never wrapped; cells are plain text."""
    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    out.print(table)


def print_fields(rows: Sequence[tuple[str, str]]) -> None:
    """One `label: value` line per row, the values aligned."""
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        say(f"{label + ':':<{width}}{value}")
