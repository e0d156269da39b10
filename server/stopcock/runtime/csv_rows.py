"""CSV request bodies into rows, by Feldera's CSV rules.

Feldera's rules (crates/adapters/src/format/csv.rs and csv/deserializer.rs,
docs.feldera.com/docs/formats/csv.md, version 0.337):

- A record ends at a newline outside quotes; quotes toggle "inside" on every
  quote character, so a quoted field may hold commas, newlines and doubled
  quotes (`""`). HTTP ingress always uses the default configuration: `,`
  delimiter, `"` quote, no header line, no comments.
- Fields are the table's columns in declaration order; extra fields are
  ignored, missing ones are NULL (an error for a NOT NULL column).
- NULL: an empty field of a non-string column, or `NULL` / `null` in a
  nullable column. An empty string field is the empty string.
- Each record is an insertion (CSV has no deletions); `update_format` does
  not apply.
- A bad record is a parse error naming its event number (the record's index
  from 1) and field; the answer is 400 `ParseErrors`, "Errors parsing input
  data (N errors):" followed by one line per error.

Unlike Feldera, which ingests a request's good records and reports the bad
ones, Stopcock applies a request whole or not at all (as for JSON): one bad
record and nothing is applied. Blank lines are skipped.
"""

from __future__ import annotations

import csv
import datetime
import io
import math
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from stopcock.runtime.data import DataError, Rows, TableShape

MAX_PENDING = 64 << 20  # bytes of one record at most
MAX_REPORTED_ERRORS = 5  # errors listed in the answer (all are counted); the
# answer travels in a gRPC trailer, which must stay a few KiB
MAX_FRAGMENT_CHARS = 256  # of a bad record, quoted in its error

# A quoted field may be as long as a record (the csv module's default is 128 KiB).
csv.field_size_limit(MAX_PENDING)

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SPECIAL_FLOAT = re.compile(r"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)
_DATE = r"([0-9]{1,4})-([0-9]{1,2})-([0-9]{1,2})"
_TIME = r"([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})(?:\.([0-9]{0,9}))?"
_DATE_RE = re.compile(_DATE)
_TIME_RE = re.compile(_TIME)
_TIMESTAMP_RE = re.compile(_DATE + r"[ T]" + _TIME)
_INT_RANGES = {
    "TINYINT": 8,
    "SMALLINT": 16,
    "INT": 32,
    "INTEGER": 32,
    "BIGINT": 64,
}
_STRING_TYPES = ("CHAR", "VARCHAR", "TEXT", "STRING", "CLOB", "CHARACTER")


class FieldError(ValueError):
    """A field that does not parse as its column's type (the message says why)."""


Parse = Callable[[str], Any]


def _int_parser(bits: int) -> Parse:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def parse(text: str) -> int:
        # Rust's str::parse::<iN> (what Feldera uses): a sign and digits, no
        # spaces or underscores; its messages.
        if not text:
            raise FieldError("cannot parse integer from empty string")
        if not _INT.fullmatch(text):
            raise FieldError("invalid digit found in string")
        value = int(text)
        if value > high:
            raise FieldError("number too large to fit in target type")
        if value < low:
            raise FieldError("number too small to fit in target type")
        return value

    return parse


def _float(text: str) -> float:
    if _FLOAT.fullmatch(text) or _SPECIAL_FLOAT.fullmatch(text):
        return float(text)
    raise FieldError("invalid float literal")


def _decimal(text: str) -> int | float:
    if not _FLOAT.fullmatch(text):
        raise FieldError(f"invalid decimal '{text}'")
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise FieldError(f"invalid decimal '{text}'") from exc
    # Stored as JSON ingest stores a number: an integer literal stays exact.
    if _INT.fullmatch(text):
        return int(text)
    result = float(value)
    if math.isinf(result):
        raise FieldError(f"decimal '{text}' is out of range")
    return result


def _bool(text: str) -> bool:
    # Rust's str::parse::<bool>: exactly `true` or `false`.
    if text == "true":
        return True
    if text == "false":
        return False
    raise FieldError("provided string was not `true` or `false`")


def _date_parts(year: str, month: str, day: str) -> str:
    try:
        date = datetime.date(int(year), int(month), int(day))
    except ValueError as exc:
        raise FieldError(f"invalid date: {exc}") from exc
    return date.isoformat()


def _time_parts(parts: tuple[str, str, str, str | None], digits: int) -> str:
    hour, minute, second, fraction = parts
    h, m, s = int(hour), int(minute), int(second)
    if h > 23 or m > 59 or s > 59:
        raise FieldError("invalid time: hour, minute or second out of range")
    text = f"{h:02d}:{m:02d}:{s:02d}"
    fraction = (fraction or "")[:digits]
    return f"{text}.{fraction}" if fraction else text


def _date(text: str) -> str:
    match = _DATE_RE.fullmatch(text.strip())
    if match is None:
        raise FieldError(f"invalid date '{text}': expected YYYY-MM-DD")
    return _date_parts(*match.groups())


def _time(text: str) -> str:
    match = _TIME_RE.fullmatch(text.strip())
    if match is None:
        raise FieldError(f"invalid time '{text}': expected HH:MM:SS[.fffffffff]")
    hour, minute, second, fraction = match.groups()
    return _time_parts((hour, minute, second, fraction), digits=9)


def _timestamp(text: str) -> str:
    match = _TIMESTAMP_RE.fullmatch(text.strip())
    if match is None:
        raise FieldError(f"invalid timestamp '{text}': expected YYYY-MM-DD HH:MM:SS[.ffffff]")
    year, month, day, hour, minute, second, fraction = match.groups()
    # Feldera keeps microseconds at most.
    time = _time_parts((hour, minute, second, fraction), digits=6)
    return f"{_date_parts(year, month, day)} {time}"


def _text(text: str) -> str:
    return text


def _base_type(declared: str) -> str:
    """`DECIMAL(10, 2)` -> `DECIMAL`, `BIGINT UNSIGNED` -> `BIGINT`."""
    return declared.upper().split("(", 1)[0].split(" ", 1)[0].strip()


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    parse: Parse
    is_string: bool  # an empty field is "" (not NULL)
    nullable: bool


def _column(name: str, declared: str, notnull: bool) -> Column:
    base = _base_type(declared or "")
    parse: Parse = _text
    if base in _INT_RANGES:
        parse = _int_parser(_INT_RANGES[base])
    elif base in ("BOOL", "BOOLEAN"):
        parse = _bool
    elif base in ("REAL", "FLOAT", "DOUBLE"):
        parse = _float
    elif base in ("DECIMAL", "NUMERIC", "DEC"):
        parse = _decimal
    elif base == "DATE":
        parse = _date
    elif base == "TIME":
        parse = _time
    elif base in ("TIMESTAMP", "DATETIME"):
        parse = _timestamp
    return Column(name, parse, base in _STRING_TYPES, not notnull)


def csv_columns(db: sqlite3.Connection, shape: TableShape) -> list[Column]:
    """How each column of the table reads a CSV field (read on the database thread)."""
    rows = db.execute('SELECT name, type, "notnull" FROM pragma_table_info(?)', (shape.name,))
    return [_column(name, declared, bool(notnull)) for name, declared, notnull in rows]


@dataclass(frozen=True, slots=True)
class ParseError:
    """One bad record, in the shape of Feldera's ParseError."""

    event_number: int
    field: str | None
    description: str
    invalid_text: str

    def json(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "event_number": self.event_number,
            "field": self.field,
            "invalid_bytes": None,
            "invalid_text": self.invalid_text,
            "suggestion": None,
            "tag": "text_event_err",
        }

    def __str__(self) -> str:
        return (
            f"Parse error (event #{self.event_number}): {self.description}\n"
            f"Invalid fragment: '{self.invalid_text}'"
        )


def _fragment(record: list[str]) -> str:
    text = ",".join(record)
    if len(text) > MAX_FRAGMENT_CHARS:
        return text[:MAX_FRAGMENT_CHARS] + "..."
    return text


def parse_errors(table: str, count: int, errors: list[ParseError]) -> DataError:
    """The refusal of a body holding `count` bad records (`errors`: the first few)."""
    if count > len(errors):
        head = f"Errors parsing input data (reporting {len(errors)} out of {count} total errors):"
    else:
        head = f"Errors parsing input data ({count} errors):"
    lines = "".join(f"\n    {error}" for error in errors)
    return DataError(
        400,
        "ParseErrors",
        f"{head}{lines}\nNothing was ingested into table '{table}': a request is applied "
        "whole or not at all",
        {"num_errors": count, "errors": [e.json() for e in errors], "table": table},
    )


class CsvRecords:
    """Cuts a CSV body arriving in chunks into checked rows, by Feldera's rules.

    Records are cut at the last newline outside quotes (quote parity is kept
    across chunks, so each byte is scanned once for quotes), then parsed by
    the csv module. Bad records are counted and the first few kept; once
    there is one, rows are no longer returned (nothing will be applied), but
    the rest of the body is still read so that every error is counted.
    """

    def __init__(self, table: str, columns: list[Column]) -> None:
        self._table = table
        self._columns = columns
        self._pending = b""
        self._quoted = False  # whether the end of _pending is inside quotes
        self._events = 0  # records read so far (Feldera's event numbers)
        self.error_count = 0
        self.errors: list[ParseError] = []

    def feed(self, chunk: bytes) -> Rows:
        """The rows of the records completed by `chunk` (possibly none)."""
        cut = self._last_boundary(chunk)
        if cut is None:
            if len(self._pending) + len(chunk) > MAX_PENDING:
                raise self._too_long()
            self._pending += chunk
            self._quoted = self._quoted != (chunk.count(b'"') % 2 == 1)
            return []
        text = self._pending + chunk[:cut]
        self._pending = chunk[cut:]
        self._quoted = self._pending.count(b'"') % 2 == 1
        return self._rows(text)

    def finish(self) -> Rows:
        """The rows of the last record (one without a final newline), if any."""
        text, self._pending = self._pending, b""
        return self._rows(text)

    def check(self) -> None:
        """Raises the body's parse errors, if it had any."""
        if self.error_count:
            raise parse_errors(self._table, self.error_count, self.errors)

    def _last_boundary(self, chunk: bytes) -> int | None:
        """Just past the last newline of `chunk` outside quotes, or None."""
        quoted = self._quoted != (chunk.count(b'"') % 2 == 1)  # at the chunk's end
        end = len(chunk)
        while (newline := chunk.rfind(b"\n", 0, end)) >= 0:
            quoted = quoted != (chunk.count(b'"', newline, end) % 2 == 1)
            if not quoted:
                return newline + 1
            end = newline
        return None

    def _too_long(self) -> DataError:
        return DataError(
            400,
            "InvalidIngressData",
            f"Invalid input for table '{self._table}': a CSV record is larger than "
            f"{MAX_PENDING >> 20} MiB (or a quote is never closed); nothing was ingested",
            {"table": self._table, "error": "record too large"},
        )

    def _rows(self, data: bytes) -> Rows:
        if not data:
            return []
        first_event = self._events + 1
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            self._events += data.count(b"\n") + (not data.endswith(b"\n"))
            self._fail(ParseError(first_event, None, f"invalid UTF-8: {exc}", repr(data[:64])))
            return []
        rows: Rows = []
        reader = csv.reader(io.StringIO(text, newline=""), strict=False)
        try:
            for record in reader:
                self._events += 1
                if not record:
                    continue  # a blank line
                row = self._row(record)
                if row is not None and not self.error_count:
                    rows.append(row)
        except csv.Error as exc:
            self._events += 1
            self._fail(ParseError(self._events, None, f"malformed CSV: {exc}", ""))
        return rows if not self.error_count else []

    def _row(self, record: list[str]) -> tuple[Any, ...] | None:
        values: list[Any] = []
        for i, column in enumerate(self._columns):
            if i >= len(record):
                if not column.nullable:
                    self._bad(record, column, f"field {i}: no field (end of row)")
                    return None
                values.append(None)
                continue
            field = record[i]
            if column.nullable and (
                field in ("NULL", "null") or (not field and not column.is_string)
            ):
                values.append(None)
                continue
            try:
                values.append(column.parse(field))
            except FieldError as exc:
                self._bad(record, column, f"field {i}: {exc}")
                return None
        return tuple(values)

    def _bad(self, record: list[str], column: Column, why: str) -> None:
        self._fail(
            ParseError(
                self._events,
                column.name,
                f"failed to deserialize CSV record: error parsing field '{column.name}': {why}",
                _fragment(record),
            )
        )

    def _fail(self, error: ParseError) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(error)
