"""Suspend time against a raw write + fsync of the same bytes, side by side.

What is measured. For pipelines holding about 1, 10 and 100 MB (table
`t(id INTEGER NOT NULL, name TEXT)`, filled through REST ingress in batches
of up to 20k rows of ~100-byte names), the time of a suspend: `POST
/v0/pipelines/{name}/stop` (force=false, the default) until the pipeline is
Stopped. Beside it, in the same run and on the same disk (a directory inside
the stack's data directory), the time to write the same number of bytes (the
size of the suspend's final checkpoint) from a buffer prepared beforehand
with os.write into a new file, fsync it, and fsync the directory (the
checkpoint's rename is made durable the same way).

Why: a suspend's final checkpoint is a copy of the runtime's database (on
tmpfs) into storage, made durable; the raw write + fsync is the least any
durable copy of those bytes costs on this disk, so suspend / raw is the
overhead Stopcock adds, comparable between runs on a shared machine.

Figures per suspend, all on the machine's clock (the manager and the runtime
run here), counted from the client's time.time() just before the POST:

* suspend: the Stopped state's `deployment_status_since` (written by the
  manager), i.e. what a user waits for, the manager's work after the
  checkpoint included (it sees Suspended, goes Stopping, kills the runtime,
  goes Stopped: SQLite commits, each fsynced);
* checkpoint: the final checkpoint's `created_at` (in
  `storage_status_details`), stamped by the runtime once the checkpoint file
  is written, fsynced, renamed and its directory fsynced, before the manifest
  is written: the checkpoint-only part (plus the request's way in);
* phases, for where the time goes: the POST answered (the manager has
  persisted the desired status; client clock), the checkpoint above, the
  runtime's "-> Suspended" log line (runtime.log, millisecond resolution,
  after the manifest is written and old checkpoint files are removed), the
  Stopping state's since when the poll (every 5 ms) saw it, and the
  manager's "runtime pid N was killed" log line (manager.log, millisecond
  resolution: the runtime process is gone, its memory freed).

Sizes run one after another (`--suspend-sizes MB:REPEATS,...`, 1:5,10:5,100:5
by default); within a size, suspends and raw writes alternate (the order
flips every repeat) after one discarded warm-up of each. The report gives the
medians and their ratio, and the ratio of the fastest of each ("best"): on a
VM a write into page-cache memory the host has not backed yet (or has taken
back) costs several times more, at random, on either side. Before
every timed operation, on either side, `sync()` flushes what other work left
dirty (and the discards of files deleted earlier), so that neither side pays
for the other. The pipeline is started again after each suspend (its restore
is not part of the figure; start -> Running is kept as context).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import procs
from bench.force_stop import parse_rfc3339
from bench.load import BenchError
from bench.stats import median, ratio

MB = 1 << 20
BATCH_ROWS = 20_000
NAME_BYTES = 100
BYTES_PER_ROW = 114  # SQLite, for the rows below: measured, used to plan the fill
POLL = 0.005  # seconds between status polls while suspending
TIMEOUT = 120.0

TARGET_RATIO = 2.0  # suspend / raw at 100 MB, at most
GOAL_RATIO = 1.3
TARGET_SIZE_MB = 100

_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ ([\w.]+): (.*)$")
_SUSPENDED = re.compile(r"^status \w+ -> Suspended$")


@dataclass(frozen=True, slots=True)
class SuspendCycle:
    """One suspend (ms from the client's time before the POST) and the start after it."""

    bytes: int
    suspend_ms: float  # -> Stopped (manager)
    checkpoint_ms: float  # -> final checkpoint's created_at (runtime)
    accepted_ms: float  # -> the POST answered (client clock)
    reported_ms: float | None  # -> runtime log "status ... -> Suspended" (ms resolution)
    stopping_ms: float | None  # -> Stopping since, when the poll saw it
    gone_ms: float | None  # -> manager log "runtime pid N was killed" (ms resolution)
    client_ms: float  # -> a poll saw Stopped (client clock)
    start_ms: float  # start -> Running afterwards (client), context
    runtime_alive_when_stopped: bool
    deployment_error: str | None


@dataclass(frozen=True, slots=True)
class RawWrite:
    """One write + fsync + directory fsync of a prepared buffer (ms)."""

    bytes: int
    write_ms: float
    fsync_ms: float  # file fsync + directory fsync

    @property
    def total_ms(self) -> float:
        return self.write_ms + self.fsync_ms


@dataclass(slots=True)
class SizeResult:
    """Everything measured for one pipeline size."""

    target_mb: int
    rows: int
    fill_s: float
    bytes: int = 0
    warmup_suspend_ms: float = 0.0
    warmup_raw_ms: float = 0.0
    cycles: list[SuspendCycle] = field(default_factory=list)
    raws: list[RawWrite] = field(default_factory=list)

    def med(self, attr: str) -> float:
        values = [getattr(c, attr) for c in self.cycles]
        return median([float(v) for v in values if v is not None])

    def raw_ms(self) -> float:
        return median([r.total_ms for r in self.raws])

    def suspend_ratio(self) -> float:
        return ratio(self.med("suspend_ms"), self.raw_ms())

    def checkpoint_ratio(self) -> float:
        return ratio(self.med("checkpoint_ms"), self.raw_ms())

    def pair_ratios(self) -> list[float]:
        """suspend / raw of each repeat (adjacent measurements): the spread shows the noise."""
        return [
            ratio(c.suspend_ms, r.total_ms) for c, r in zip(self.cycles, self.raws, strict=True)
        ]


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """`1:5,10:5,100:3` -> [(1, 5), (10, 5), (100, 3)] (MB, repeats)."""
    sizes = []
    for item in text.split(","):
        mb, _, repeats = item.strip().partition(":")
        try:
            pair = (int(mb), int(repeats or "3"))
        except ValueError:
            raise ValueError(f"not MB[:REPEATS]: {item!r}") from None
        if min(pair) < 1:
            raise ValueError(f"sizes and repeats must be at least 1: {item!r}")
        sizes.append(pair)
    return sizes


# -- REST helpers ----------------------------------------------------------------


def _get(rest: httpx.Client, name: str, selector: str = "status") -> dict[str, Any]:
    r = rest.get(f"/v0/pipelines/{name}", params={"selector": selector})
    if r.status_code != 200:
        raise BenchError(f"GET {name}: {r.status_code} {r.text}")
    body: dict[str, Any] = r.json()
    return body


def _post(rest: httpx.Client, name: str, action: str, **params: str) -> None:
    r = rest.post(f"/v0/pipelines/{name}/{action}", params=params)
    if r.status_code != 202:
        raise BenchError(f"POST {name}/{action} {params}: {r.status_code} {r.text}")


def _wait(rest: httpx.Client, name: str, status: str) -> dict[str, Any]:
    deadline = time.perf_counter() + TIMEOUT
    while (p := _get(rest, name))["deployment_status"] != status:
        if time.perf_counter() > deadline:
            raise BenchError(f"{name} not {status} after {TIMEOUT}s: {p['deployment_status']}")
        time.sleep(POLL)
    return p


def start(rest: httpx.Client, name: str) -> float:
    """Starts `name` and waits for Running; returns the time it took (ms, client)."""
    t = time.perf_counter()
    _post(rest, name, "start")
    _wait(rest, name, "Running")
    return (time.perf_counter() - t) * 1000


def batch_body(first_id: int, rows: int) -> bytes:
    """A JSON array of `rows` rows {id, name} with ~100-byte names, ids from `first_id`."""
    pad = "abcdefghijklmnopqrstuvwxyz0123456789" * 3
    return json.dumps(
        [
            {"id": i, "name": f"{i:012d}-{pad}"[:NAME_BYTES]}
            for i in range(first_id, first_id + rows)
        ]
    ).encode()


def ingest(rest: httpx.Client, name: str, body: bytes) -> None:
    r = rest.post(
        f"/v0/pipelines/{name}/ingress/t",
        params={"format": "json", "array": "true"},
        content=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    if r.status_code != 200:
        raise BenchError(f"ingress into {name}: {r.status_code} {r.text[:500]}")


def fill(rest: httpx.Client, name: str, target_bytes: int) -> int:
    """Ingests rows until the database should be about `target_bytes`; returns the rows."""
    rows = max(1, target_bytes // BYTES_PER_ROW)
    done = 0
    while done < rows:
        n = min(BATCH_ROWS, rows - done)
        ingest(rest, name, batch_body(done, n))
        done += n
    return done


# -- the two sides -----------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def raw_write(directory: Path, buffer: bytes) -> RawWrite:
    """Writes `buffer` into a new file of `directory`, fsyncs it and the directory."""
    os.sync()  # untimed: start from a quiet disk, as the suspend does
    path = directory / f"raw-{uuid.uuid4()}.bin"
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(buffer)
        while view:
            view = view[os.write(fd, view) :]
        t1 = time.perf_counter()
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(directory)
    t2 = time.perf_counter()
    path.unlink()  # untimed; the next sync() absorbs what it costs the disk
    return RawWrite(len(buffer), (t1 - t0) * 1000, (t2 - t1) * 1000)


def _log_time(stamp: str, millis: str) -> float:
    """Seconds since the epoch of a log line's time (local time, as logging writes it)."""
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000


def last_logged(log: Path, logger: str, message: re.Pattern[str], after: float) -> float | None:
    """The time of the last line of `logger` matching `message`, if not before `after`.

    Log times have millisecond resolution: a line stamped within the
    millisecond of `after` counts.
    """
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        parsed = _parse_line(line)
        if parsed and parsed[1] == logger and message.search(parsed[2]):
            at = parsed[0]
            return at if at >= after - 0.001 else None
    return None


def _parse_line(line: str) -> tuple[float, str, str] | None:
    """(time, logger, message) of a log line: the manager's JSON lines or the runtime's text."""
    if line.startswith("{"):
        try:
            entry = json.loads(line)
            return parse_rfc3339(entry["time"]), entry["logger"], entry["message"]
        except (ValueError, KeyError, BenchError):
            return None
    m = _LOG_LINE.match(line)
    return (_log_time(m.group(1), m.group(2)), m.group(3), m.group(4)) if m else None


@dataclass(frozen=True, slots=True)
class Logs:
    """Where the runtime and the manager log (times read from them)."""

    runtime: Path
    manager: Path


def suspend(
    rest: httpx.Client, name: str, logs: Logs, find_runtimes: Callable[[], list[int]]
) -> SuspendCycle:
    """Suspends the running `name`, times it (see the module doc), starts it again."""
    runtimes = find_runtimes()
    os.sync()  # untimed: start from a quiet disk, as the raw write does
    before_wall = time.time()
    before = time.perf_counter()
    _post(rest, name, "stop")
    accepted_ms = (time.perf_counter() - before) * 1000
    stopping: float | None = None
    deadline = before + TIMEOUT
    while (p := _get(rest, name))["deployment_status"] != "Stopped":
        if p["deployment_status"] == "Stopping" and stopping is None:
            stopping = parse_rfc3339(p["deployment_status_since"])
        if time.perf_counter() > deadline:
            raise BenchError(f"{name} not Stopped {TIMEOUT}s after a suspend")
        time.sleep(POLL)
    client_ms = (time.perf_counter() - before) * 1000
    alive = any(procs.alive(pid) for pid in runtimes)
    full = _get(rest, name, "all")
    checkpoints = (full.get("storage_status_details") or {}).get("checkpoints") or []
    if not checkpoints:
        raise BenchError(f"{name}: no checkpoint listed after a suspend: {full}")
    last = checkpoints[-1]
    error = full.get("deployment_error")
    pids = "|".join(str(pid) for pid in runtimes) or "-"
    gone_line = re.compile(rf"^runtime pid ({pids}) (was killed|exited)")

    def ms(at: float | None) -> float | None:
        return None if at is None else (at - before_wall) * 1000

    return SuspendCycle(
        bytes=int(last["size"]),
        suspend_ms=(parse_rfc3339(full["deployment_status_since"]) - before_wall) * 1000,
        checkpoint_ms=(parse_rfc3339(last["created_at"]) - before_wall) * 1000,
        accepted_ms=accepted_ms,
        reported_ms=ms(last_logged(logs.runtime, "stopcock.runtime", _SUSPENDED, before_wall)),
        stopping_ms=ms(stopping),
        gone_ms=ms(last_logged(logs.manager, "stopcock.runner", gone_line, before_wall)),
        client_ms=client_ms,
        start_ms=start(rest, name),
        runtime_alive_when_stopped=alive,
        deployment_error=None if error is None else json.dumps(error),
    )


# -- the section ---------------------------------------------------------------------


def run(
    rest: httpx.Client,
    *,
    create: Callable[[str], dict[str, Any]],
    data_dir: Path,
    manager_log: Path,
    find_runtimes: Callable[[str], list[int]],
    sizes: list[tuple[int, int]],
    progress: Callable[[str], None],
) -> list[SizeResult]:
    """Fills one pipeline per size, then alternates suspends and raw writes (module doc)."""
    raw_dir = data_dir / "bench-raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for mb, repeats in sizes:
        name = f"bench-suspend-{mb}mb"
        created = create(name)
        logs = Logs(data_dir / "pipelines" / created["id"] / "run" / "runtime.log", manager_log)
        start(rest, name)
        t = time.perf_counter()
        rows = fill(rest, name, mb * MB)
        result = SizeResult(target_mb=mb, rows=rows, fill_s=time.perf_counter() - t)
        progress(f"suspend {mb} MB: {rows} rows ingested in {result.fill_s:.1f} s")

        def find(name: str = name) -> list[int]:
            return find_runtimes(name)

        warm = suspend(rest, name, logs, find)  # also learns the checkpoint's size
        result.bytes = warm.bytes
        result.warmup_suspend_ms = warm.suspend_ms
        buffer = os.urandom(warm.bytes)
        result.warmup_raw_ms = raw_write(raw_dir, buffer).total_ms
        progress(
            f"suspend {mb} MB: {warm.bytes} bytes; warm-up suspend {warm.suspend_ms:.0f} ms, "
            f"raw {result.warmup_raw_ms:.0f} ms (discarded)"
        )
        for i in range(repeats):
            if i % 2 == 0:
                result.raws.append(raw_write(raw_dir, buffer))
                result.cycles.append(suspend(rest, name, logs, find))
            else:
                result.cycles.append(suspend(rest, name, logs, find))
                result.raws.append(raw_write(raw_dir, buffer))
            c, r = result.cycles[-1], result.raws[-1]
            progress(
                f"suspend {mb} MB {i + 1}/{repeats}: suspend {c.suspend_ms:.0f} ms "
                f"(checkpoint {c.checkpoint_ms:.0f} ms), raw {r.total_ms:.0f} ms, "
                f"start {c.start_ms:.0f} ms"
            )
            if c.bytes != result.bytes:
                raise BenchError(f"{name}: checkpoint size changed: {c.bytes} != {result.bytes}")
        with contextlib.suppress(BenchError):  # free its memory for the rest of the run
            _post(rest, name, "stop", force="true")
            _wait(rest, name, "Stopped")
        results.append(result)
    return results
