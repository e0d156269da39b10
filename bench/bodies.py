"""Large bodies: ingress of 1 MiB to 1 GiB in one request, and a 1 GiB query answer.

Ingress. Rows/s of one request body of 1 MiB, 64 MiB and 1 GiB
(`--bodies-sizes MB:REPEATS,...`, 1:9,64:3,1024:1 by default; MiB), POSTed
as NDJSON to `/v0/pipelines/{name}/ingress/t` through Envoy by one client
(this process), against the baseline in the same run: this process parses
the same rows with `json.loads` and inserts them with `executemany` into an
in-memory SQLite table, in one transaction per body, ~1 MiB of lines at a
time (each block's lines joined into one JSON array and parsed in one call:
the fastest stdlib parse, the runtime's own less its blank-line filter, so
the ratio is the cost of the path, not of a slower parse; the parsed dicts
are bound by name as bench.ingress does, which costs about what turning them
into tuples would; a 1 GiB body never exists whole as Python objects on
either side).

Rows are the other sections' {id, name} with 100-byte names (~133 bytes of
NDJSON a row, ~8 million rows per GiB; `--bodies-name-bytes` for wider
rows): per-row costs dominate, which is the harder case for a Python path
(every row is parsed, checked, spooled and bound one by one), and what event
or change-data rows look like. Bodies are built from a ~1 MiB block
template whose ids and names take the block number (a bytes.replace in C),
so every row is distinct and generating a body costs ~1 ms per MiB: the
client does not compete with the server for the machine's two cores. Bodies
up to STREAM_ABOVE_MB are built before the request and sent with a length;
larger ones are generated as they are sent (chunked), never held whole.

Each size runs in a fresh pipeline, so that the runtime's VmHWM (its
lifetime peak resident memory) covers that size's ingress alone; small
sizes (WARM_UP_MB) repeated more than once first run one discarded warm-up
of each side; then the sides alternate (baseline first on even repeats,
ingress first on odd ones).

During each timed ingress a thread samples VmRSS of the runtime, the
manager and Envoy every 50 ms (a measurement loop): the report gives each
process's RSS before the ingress and its peak sample, and the runtime's
VmHWM. It also samples the runtime's memory that RSS does not show: its
database files in tmpfs (unlinked, held open; the table, plus the WAL that
one long transaction grows) and its spool file on disk. CPU seconds of each
process give the cores each used. The database files' first growth marks
when the runtime began applying the body (nothing writes them while it is
being checked): from there to the answer is the apply, the part of an
ingress that waits for the whole body (seen up to ~0.2 s late: the files
grow once the writer's 8 MiB page cache spills). For a streamed body the
client also notes when its last byte left (tens of MiB may then still be
in flight in Envoy, the manager and their windows).

Query. `SELECT * FROM t` on the largest size's pipeline (its table then
holds the 1 GiB body's rows: ~1 GiB of NDJSON out, the same rows as in):
the representative big answer, a full export of what was ingested, read
from the runtime's tmpfs database by a reader connection and streamed
through the manager and Envoy, rather than a generated result that would
measure a CTE. The client is `bench.reader` in a process of its own,
reading as fast as it can and keeping one chunk at a time: time to first
body byte (from just before the request is sent), rows/s over the whole
answer, and peak RSS of the runtime, manager, Envoy and the client (sampled
as above). Baseline: this process runs the same query on its in-memory
table of the same rows (the 1 GiB baseline's), fetching 1000 rows at a time
as the runtime does and json.dumps-ing each row into a discarded buffer.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from stopcock.runtime.memdb import memory_dir

from bench import ingress, procs
from bench.ingress import IngressRun
from bench.load import REPO, BenchError
from bench.stats import ratio

MB = 1 << 20
TARGET_RATIO = 0.5  # ingress rows/s / baseline rows/s, at least, at every size
RSS_TARGET_MIB = 256.0  # the runtime's peak during the largest ingress, at most
STREAM_ABOVE_MB = 128  # larger bodies are generated while they are sent
# Smaller sizes first run a discarded warm-up of each side: there a first
# request's one-off costs would be a visible share; above, they are noise
# and a warm-up would cost seconds.
WARM_UP_MB = 16
SAMPLE_EVERY = 0.05  # seconds between memory samples
QUERY_TIMEOUT_SECS = 3600  # a 1 GiB answer takes minutes on a busy 2-core machine
NAME_BYTES = 100
SCHEMA = "CREATE TABLE t (id INTEGER NOT NULL, name TEXT)"
INSERT = "INSERT INTO t (id, name) VALUES (:id, :name)"
QUERY = "SELECT * FROM t"
FETCH_ROWS = 1000  # rows per step, as the runtime (stopcock.runtime.queries.QUERY_CHUNK_ROWS)
ROLES = ("runtime", "manager", "Envoy")
_PAD = b"abcdefghijklmnopqrstuvwxyz0123456789"
_BLOCK = b"#####"  # where a block's number goes in the template


class RowBlocks:
    """Blocks of ~1 MiB of NDJSON rows; block `n` holds ids 1nnnnn000000 and up.

    Ids are 12 digits and names start with them, so every block has the same
    length and no two rows anywhere are equal.
    """

    def __init__(self, name_bytes: int) -> None:
        if name_bytes < 14:
            raise ValueError("names of at least 14 bytes (they start with the id)")
        pad = (_PAD * (name_bytes // len(_PAD) + 1))[: name_bytes - 13]
        row = b'{"id": 1' + _BLOCK + b'%06d, "name": "1' + _BLOCK + b"%06d-" + pad + b'"}\n'
        self.row_bytes = len(row % (0, 0))
        self.rows = MB // self.row_bytes  # per block
        self._template = b"".join(row % (i, i) for i in range(self.rows))

    def block(self, n: int) -> bytes:
        return self._template.replace(_BLOCK, b"%05d" % n)

    def blocks(self, first: int, count: int) -> Iterator[bytes]:
        for n in range(first, first + count):
            yield self.block(n)


@dataclass(frozen=True, slots=True)
class Hops:
    """The stack's processes and the calls that make pipelines on it."""

    base_url: str
    manager: int
    envoy: list[int]
    create: Callable[[str, dict[str, Any]], object]  # name, runtime_config
    start: Callable[[str], object]
    force_stop: Callable[[str], object]
    runtime_pid: Callable[[str], int]


Gauges = dict[str, Callable[[], float]]


def _rss(pids: list[int]) -> Callable[[], float]:
    return lambda: sum(procs.rss_mib(p) for p in pids)


def rss_gauges(roles: dict[str, list[int]]) -> Gauges:
    """Each role's VmRSS, summed over its processes (MiB)."""
    return {role: _rss(pids) for role, pids in roles.items()}


def runtime_file_gauges(runtime: int) -> Gauges:
    """The runtime's memory outside its RSS: its database files in tmpfs (the pipeline's
    state, and the WAL a long transaction grows), and its ingest spool (on disk)."""
    database = f"{memory_dir()}/stopcock-"
    return {
        "database": lambda: procs.open_file_mib(runtime, database),
        # An O_TMPFILE file (tempfile.TemporaryFile) has no name of its own: its directory.
        "spool": lambda: procs.open_file_mib(runtime, "/spool/"),
    }


class Sampler:
    """Reads every gauge each SAMPLE_EVERY s, in a thread, and keeps the highest values.

    `rose[name]` is the time (perf_counter) of the first sample at least
    RISE above the value before: for the runtime's database files, when the
    apply began (nothing writes them while a body is being checked).
    """

    RISE = 0.25  # MiB

    def __init__(self, gauges: Gauges) -> None:
        self._gauges = gauges
        self.before = self._sample()
        self.peak = dict(self.before)
        self.rose: dict[str, float] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> dict[str, float]:
        return {name: gauge() for name, gauge in self._gauges.items()}

    def _record(self) -> None:
        now = time.perf_counter()
        for name, value in self._sample().items():
            self.peak[name] = max(self.peak[name], value)
            if name not in self.rose and value >= self.before[name] + self.RISE:
                self.rose[name] = now
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self._record()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._record()


@dataclass(slots=True)
class SizeBodies:
    """One body size: interleaved ingress and baseline runs, and memory."""

    mb: int
    body_bytes: int
    rows: int  # per body
    streamed: bool  # generated while sent (chunked) rather than built first
    baseline: list[IngressRun] = field(default_factory=list)
    subject: list[IngressRun] = field(default_factory=list)
    memory_before: dict[str, float] = field(default_factory=dict)  # MiB, before the 1st timed run
    memory_peak: dict[str, float] = field(default_factory=dict)  # MiB, max sample over the runs
    samples: int = 0
    runtime_hwm_mib: float = math.nan  # VmHWM after the runs (a fresh runtime)
    # Streamed bodies: seconds from the POST to the last byte leaving the client.
    sent_s: list[float] = field(default_factory=list)
    # Seconds from the database files' first growth (the apply began: the
    # checked rows inserted in one transaction) to the answer; 50 ms resolution.
    apply_s: list[float] = field(default_factory=list)

    def add_samples(self, sampled: Sampler) -> None:
        self.memory_before = self.memory_before or sampled.before
        for role, mib in sampled.peak.items():
            self.memory_peak[role] = max(self.memory_peak.get(role, 0.0), mib)
        self.samples += sampled.samples

    def rows_ratio(self) -> float:
        return ingress.rows_ratio(self.subject, self.baseline)

    def pair_ratios(self) -> list[float]:
        return ingress.pair_ratios(self.subject, self.baseline)


@dataclass(frozen=True, slots=True)
class QueryRun:
    """One whole query answer, read as fast as possible."""

    rows: int
    bytes: int
    first_row_ms: float  # REST: request sent -> first body byte; baseline: first chunk built
    seconds: float
    rows_per_s: float
    client_cores: float  # the reader process (REST) or this process (baseline)
    manager_cores: float = 0.0
    envoy_cores: float = 0.0
    runtime_cores: float = 0.0
    machine_cores: float = 0.0


@dataclass(slots=True)
class QueryBodies:
    sql: str
    table_rows: int
    subject: QueryRun
    baseline: QueryRun
    memory_before: dict[str, float]  # MiB; "client" is the reader's, once started
    memory_peak: dict[str, float]
    samples: int
    runtime_hwm_mib: float  # lifetime: the ingress before it included

    def rows_ratio(self) -> float:
        return ratio(self.subject.rows_per_s, self.baseline.rows_per_s)


@dataclass(slots=True)
class BodiesResult:
    name_bytes: int
    row_bytes: int
    sizes: list[SizeBodies] = field(default_factory=list)
    query: QueryBodies | None = None


# -- the baseline --------------------------------------------------------------


class Baseline:
    """json.loads + executemany into an in-memory table, one transaction per body."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:", isolation_level=None)
        self.db.execute(SCHEMA)

    def ingest(self, blocks: Iterable[bytes]) -> IngressRun:
        """Times the parse and inserts only: generating a streamed block is not timed."""
        rows, wall, cpu = 0, 0.0, 0.0
        machine0, start = procs.machine_busy_seconds(), time.perf_counter()
        self.db.execute("BEGIN")
        for block in blocks:
            c0, t0 = time.process_time(), time.perf_counter()
            updates = json.loads(b"[" + b",".join(block.splitlines()) + b"]")
            self.db.executemany(INSERT, updates)
            rows += len(updates)
            del updates  # no more than one block's objects at a time
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
        c0, t0 = time.process_time(), time.perf_counter()
        self.db.execute("COMMIT")
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        # Over the whole run, block generation included: what else the machine did.
        machine = (procs.machine_busy_seconds() - machine0) / (time.perf_counter() - start)
        return IngressRun(rows, wall, rows / wall, client_cores=cpu / wall, machine_cores=machine)

    def query(self, sql: str) -> QueryRun:
        """The rows as NDJSON, 1000 at a time, into a buffer that is dropped at once."""
        rows = size = 0
        machine0 = procs.machine_busy_seconds()
        c0, t0 = time.process_time(), time.perf_counter()
        first = math.nan
        cursor = self.db.execute(sql)
        names = [d[0] for d in cursor.description]
        while batch := cursor.fetchmany(FETCH_ROWS):
            lines = [json.dumps(dict(zip(names, row, strict=True))) for row in batch]
            size += len(("\n".join(lines) + "\n").encode())
            rows += len(batch)
            if math.isnan(first):
                first = (time.perf_counter() - t0) * 1000
        seconds = time.perf_counter() - t0
        cores = (time.process_time() - c0) / seconds
        machine = (procs.machine_busy_seconds() - machine0) / seconds
        return QueryRun(
            rows, size, first, seconds, rows / seconds, client_cores=cores, machine_cores=machine
        )

    def close(self) -> None:
        self.db.close()


# -- the path through Envoy ------------------------------------------------------


class Cpu:
    """CPU seconds of the processes on the path, for cores used over a run."""

    def __init__(self, hops: Hops, runtime: int) -> None:
        self._pids = (hops.manager, hops.envoy, runtime)

    def read(self) -> tuple[float, float, float, float, float]:
        manager, envoy, runtime = self._pids
        return (
            procs.cpu_seconds(manager),
            sum(procs.cpu_seconds(pid) for pid in envoy),
            procs.cpu_seconds(runtime),
            procs.machine_busy_seconds(),
            time.process_time(),
        )

    @staticmethod
    def cores(before: tuple[float, ...], after: tuple[float, ...], seconds: float) -> list[float]:
        return [(b - a) / seconds for a, b in zip(before, after, strict=True)]


def _until_sent(blocks: Iterator[bytes], sent: list[float]) -> Iterator[bytes]:
    """`blocks`, noting when the last one was handed over (httpx asks for the next once
    it has written the previous to the socket)."""
    yield from blocks
    sent.append(time.perf_counter())


def _ingress(
    client: httpx.Client, name: str, body: bytes | Iterator[bytes], rows: int, cpu: Cpu
) -> tuple[IngressRun, float, float]:
    """One POST: the run, when it began and (a streamed body) when its last byte left."""
    sent: list[float] = []
    if not isinstance(body, bytes):
        body = _until_sent(body, sent)
    before, t0 = cpu.read(), time.perf_counter()
    r = client.post(
        f"/v0/pipelines/{name}/ingress/t",
        params={"format": "json"},
        content=body,
        headers={"content-type": "application/x-ndjson"},
    )
    seconds = time.perf_counter() - t0
    if r.status_code != 200:
        raise BenchError(f"ingress into {name}: {r.status_code} {r.text[:500]}")
    manager, envoy, runtime, machine, client_cpu = Cpu.cores(before, cpu.read(), seconds)
    done = IngressRun(
        rows,
        seconds,
        rows / seconds,
        client_cores=client_cpu,
        manager_cores=manager,
        envoy_cores=envoy,
        runtime_cores=runtime,
        machine_cores=machine,
    )
    return done, t0, (sent[0] if sent else math.nan)


def _count(client: httpx.Client, name: str) -> int:
    sql = "SELECT count(*) AS n FROM t"
    r = client.get(f"/v0/pipelines/{name}/query", params={"sql": sql, "format": "json"})
    if r.status_code != 200:
        raise BenchError(f"count of {name}: {r.status_code} {r.text[:500]}")
    n: int = json.loads(r.text)["n"]
    return n


def _size(
    hops: Hops,
    gen: RowBlocks,
    mb: int,
    repeats: int,
    progress: Callable[[str], None],
) -> tuple[SizeBodies, Baseline, str]:
    """Runs one size in a fresh pipeline; returns its figures, baseline and pipeline."""
    name = f"bench-bodies-{mb}mb"
    hops.create(name, {"query_timeout_secs": QUERY_TIMEOUT_SECS})
    hops.start(name)
    runtime = hops.runtime_pid(name)
    streamed = mb > STREAM_ABOVE_MB
    result = SizeBodies(mb, mb * gen.rows * gen.row_bytes, mb * gen.rows, streamed)
    roles = {"runtime": [runtime], "manager": [hops.manager], "Envoy": hops.envoy}
    gauges = rss_gauges(roles) | runtime_file_gauges(runtime)
    cpu = Cpu(hops, runtime)
    baseline = Baseline()
    client = httpx.Client(base_url=hops.base_url, timeout=httpx.Timeout(900.0, connect=10.0))
    next_block = 0
    try:
        warm = repeats > 1 and mb <= WARM_UP_MB
        for i in range(-1 if warm else 0, repeats):  # -1: the discarded warm-up
            first, next_block = next_block, next_block + mb
            built = None if streamed else list(gen.blocks(first, mb))
            for label in ("baseline", "ingress") if i % 2 == 0 else ("ingress", "baseline"):
                if label == "baseline":
                    done = baseline.ingest(built if built is not None else gen.blocks(first, mb))
                else:
                    body = b"".join(built) if built is not None else gen.blocks(first, mb)
                    with Sampler(gauges) as sampled:
                        done, t0, sent = _ingress(client, name, body, result.rows, cpu)
                    del body
                    if i >= 0:
                        result.add_samples(sampled)
                        result.sent_s.append(sent - t0)
                        applied = sampled.rose.get("database", math.nan)
                        result.apply_s.append(t0 + done.seconds - applied)
                if i >= 0:
                    (result.baseline if label == "baseline" else result.subject).append(done)
                what = "warm-up" if i < 0 else f"{i + 1}/{repeats}"
                progress(
                    f"bodies {mb} MiB {label} {what}: {done.rows_per_s:.0f} rows/s "
                    f"({done.rows} rows in {done.seconds:.2f} s)"
                )
        result.runtime_hwm_mib = procs.peak_rss_mib(runtime)
        held = _count(client, name)
        if held != next_block * gen.rows:
            raise BenchError(f"{name} holds {held} rows, {next_block * gen.rows} were sent")
    except BaseException:
        baseline.close()
        raise
    finally:
        client.close()
    return result, baseline, name


def _query(
    hops: Hops, name: str, baseline: Baseline, progress: Callable[[str], None]
) -> QueryBodies:
    """The whole table through Envoy (bench.reader, its own process), then the baseline."""
    runtime = hops.runtime_pid(name)
    cpu = Cpu(hops, runtime)
    url = f"{hops.base_url}/v0/pipelines/{name}/query"
    reader = subprocess.Popen(
        [sys.executable, "-m", "bench.reader", url, QUERY],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        roles = {"runtime": [runtime], "manager": [hops.manager], "Envoy": hops.envoy}
        # The reader's memory is sampled along; its "before" is its size at start-up.
        roles["client"] = [reader.pid]
        before = cpu.read()
        with Sampler(rss_gauges(roles)) as sampled:
            out, _ = reader.communicate(timeout=QUERY_TIMEOUT_SECS)
        after = cpu.read()
    finally:
        with contextlib.suppress(ProcessLookupError):
            reader.kill()
        reader.wait()
    got = json.loads(out or '{"error": "no output"}')
    if "error" in got:
        raise BenchError(f"query of {name}: {got['error']}")
    seconds = float(got["seconds"])
    manager, envoy, runtime_cores, machine, _ = Cpu.cores(before, after, seconds)
    subject = QueryRun(
        rows=int(got["rows"]),
        bytes=int(got["bytes"]),
        first_row_ms=float(got["first_byte_s"]) * 1000,
        seconds=seconds,
        rows_per_s=int(got["rows"]) / seconds,
        client_cores=float(got["cpu_s"]) / seconds,
        manager_cores=manager,
        envoy_cores=envoy,
        runtime_cores=runtime_cores,
        machine_cores=machine,
    )
    progress(
        f"bodies query through Envoy: {subject.rows_per_s:.0f} rows/s ({subject.rows} rows, "
        f"{subject.bytes / MB:.0f} MiB in {seconds:.1f} s), "
        f"first byte {subject.first_row_ms:.0f} ms"
    )
    if not got["whole_lines"]:
        raise BenchError(f"query of {name}: the answer ends inside a line (cut short)")
    base = baseline.query(QUERY)
    progress(
        f"bodies query baseline: {base.rows_per_s:.0f} rows/s ({base.rows} rows in "
        f"{base.seconds:.1f} s)"
    )
    if base.rows != subject.rows:
        raise BenchError(f"query of {name}: {subject.rows} rows, the baseline {base.rows}")
    return QueryBodies(
        sql=QUERY,
        table_rows=base.rows,
        subject=subject,
        baseline=base,
        memory_before=sampled.before,
        memory_peak=sampled.peak,
        samples=sampled.samples,
        runtime_hwm_mib=procs.peak_rss_mib(runtime),
    )


def run(
    hops: Hops,
    *,
    sizes: list[tuple[int, int]],
    name_bytes: int = NAME_BYTES,
    query: bool = True,
    progress: Callable[[str], None],
) -> BodiesResult:
    """Each size in turn (module doc), then the query on the largest size's table."""
    gen = RowBlocks(name_bytes)
    result = BodiesResult(name_bytes=name_bytes, row_bytes=gen.row_bytes)
    largest = max(mb for mb, _ in sizes)
    for mb, repeats in sizes:
        size, baseline, name = _size(hops, gen, mb, repeats, progress)
        result.sizes.append(size)
        try:
            if query and mb == largest and result.query is None:
                result.query = _query(hops, name, baseline, progress)
        finally:
            baseline.close()
            # Frees the pipeline's database (tmpfs) for what follows.
            with contextlib.suppress(BenchError, AssertionError):
                hops.force_stop(name)
    return result
