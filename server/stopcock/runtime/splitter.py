"""Cuts a request body that arrives in chunks into whole JSON updates.

A body of any size is parsed piece by piece, so that no process ever holds
it whole. NDJSON cuts at the last newline of what has arrived. A JSON array
(`array=true`) cuts after the last complete element: a candidate cut is a
`}` followed by a `,` (rows are objects), and it is right exactly when the
text before it parses as a list — JSON parses left to right deterministically,
so a prefix that parses as complete elements ends at a top-level separator,
whatever strings or nesting the rest holds. A failed candidate costs a parse,
so only a few are tried; if none holds, more text is awaited, up to
MAX_PENDING bytes (an update larger than that is refused).
"""

from __future__ import annotations

import json
from typing import Any

from stopcock.runtime.data import DataError, parse_lines

MAX_PENDING = 64 << 20  # bytes of one update (or of text that cannot be cut) at most
CANDIDATES = 3  # cuts tried per chunk before waiting for more text
_WHITESPACE = b" \t\r\n"


def _bad(table: str, error: str) -> DataError:
    return DataError(
        400,
        "InvalidIngressData",
        f"Invalid input for table '{table}': {error}; nothing was ingested",
        {"table": table, "update_index": None, "error": error},
    )


def _loads(text: bytes, table: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(table, f"malformed JSON: {exc}") from exc


class UpdateSplitter:
    def __init__(self, array: bool, table: str) -> None:
        self._array = array
        self._table = table
        self._pending = b""
        self._opened = not array  # an array body must start with '['
        self._cut_at_comma = False  # then an element must follow: `[1,]` is not JSON

    def feed(self, chunk: bytes) -> list[Any]:
        """The updates completed by `chunk` (possibly none)."""
        pending = self._pending + chunk if self._pending else chunk
        if not self._opened:
            pending = pending.lstrip(_WHITESPACE)
            if not pending:
                return []
            if pending[:1] != b"[":
                raise _bad(self._table, "with array=true the body must be a JSON array")
            pending = pending[1:]
            self._opened = True
        cut = self._cut_lines(pending) if not self._array else self._cut_array(pending)
        if cut is None:
            if len(pending) > MAX_PENDING:
                raise _bad(
                    self._table,
                    f"an update is larger than {MAX_PENDING >> 20} MiB (or the body is not "
                    "one JSON document per line / one array of objects)",
                )
            self._pending = pending
            return []
        updates, self._pending = cut
        return updates

    def finish(self) -> list[Any]:
        """The updates still pending once the body has ended."""
        pending, self._pending = self._pending, b""
        if self._array:
            if not self._opened:
                raise _bad(self._table, "with array=true the body must be a JSON array")
            updates = _loads(b"[" + pending, self._table)
            assert isinstance(updates, list)
            if not updates and self._cut_at_comma:
                raise _bad(self._table, "malformed JSON: a comma ends the array")
            return updates
        return parse_lines(pending, self._table)

    def _cut_lines(self, pending: bytes) -> tuple[list[Any], bytes] | None:
        end = pending.rfind(b"\n")
        if end < 0:
            return None
        return parse_lines(pending[:end], self._table), pending[end + 1 :]

    def _cut_array(self, pending: bytes) -> tuple[list[Any], bytes] | None:
        end = len(pending)
        for _ in range(CANDIDATES):
            brace = pending.rfind(b"}", 0, end)
            if brace < 0:
                return None
            end = brace
            comma = brace + 1
            while comma < len(pending) and pending[comma] in _WHITESPACE:
                comma += 1
            if comma >= len(pending) or pending[comma] != ord(","):
                continue
            try:
                updates = json.loads(b"[" + pending[: brace + 1] + b"]")
            except (ValueError, UnicodeDecodeError):
                continue
            self._cut_at_comma = True
            return updates, pending[comma + 1 :]
        return None
