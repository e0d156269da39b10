"""The web console in a real browser (section 9 of `python -m bench`).

With `pipelines` (100) pipelines listed, headless Chromium (Debian's, driven
by selenium) shows the console's list while pipelines are started and force
stopped, one at a time and then in bursts. Measured:

* state change -> display: for each status a list row shows, the time from
  the change's commit (the record's `deployment_status_since`, written in
  the same transaction) to the row's `data-status` attribute changing in the
  page (a MutationObserver, `performance.timeOrigin + now()`: the same
  clock as the manager's on this host), and to the next animation frame
  after it (when the browser can paint it);
* beside it, the same changes as a plain HTTP client receives them from the
  same stream (`GET /v0/watch`, httpx in a thread): the ratio is what the
  browser and the console's code add;
* page load: from navigation to every pipeline's row shown, the navigation
  timing's DOMContentLoaded and load, and the bytes transferred (the page
  and each of its files, from Resource Timing), over `loads` fresh loads.

Each displayed status is matched to the commit of that status of that
pipeline, the latest one before it was displayed. The list stream coalesces
changes, so a status held for less time than the browser takes to look may
never be displayed: those are counted as skipped, not measured.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import httpx
from stopcock.console_assets import CONSOLE_DIR, console_assets

from bench.force_stop import Latency
from bench.load import BenchError
from bench.stats import median, ratio
from tests.browser import chromium
from tests.support import Stack

TARGET_P99_MS = 100.0
PAGE_BUDGET_BYTES = 300 * 1024
PREFIX = "bench-console-"
# Records (name, status, display time in epoch ms, next frame time) for every
# status a list row takes: the console sets `data-status` on the row
# (the hooks the console keeps for this: tr[data-pipeline][data-status] in #pipelines).
OBSERVER = """
window.__marks = [];
const mark = (name, status, t) => {
  const entry = [name, status, t, 0];
  window.__marks.push(entry);
  requestAnimationFrame(() => { entry[3] = performance.timeOrigin + performance.now(); });
};
new MutationObserver((records) => {
  const t = performance.timeOrigin + performance.now();
  records.forEach((r, i) => {
    if (r.type === 'attributes' && r.target.matches('tr[data-pipeline]')) {
      // The value this mutation set: the next mutation's old value, or the current one.
      const next = records.slice(i + 1)
        .find((o) => o.type === 'attributes' && o.target === r.target);
      const value = next ? next.oldValue : r.target.dataset.status;
      if (value !== r.oldValue) mark(r.target.dataset.pipeline, value, t);  // not a re-render
    }
    for (const n of r.addedNodes || []) {
      if (n.nodeType === 1 && n.matches('tr[data-pipeline]')) {
        mark(n.dataset.pipeline, n.dataset.status, t);
      }
    }
  });
}).observe(document.getElementById('pipelines'),
  {attributes: true, attributeFilter: ['data-status'], attributeOldValue: true,
   childList: true, subtree: true});
"""
LOAD_FIGURES = """
const nav = performance.getEntriesByType('navigation')[0];
const files = performance.getEntriesByType('resource')
  .filter((e) => e.name.includes('/console/'));
return {
  dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd,
  transferred: nav.transferSize + files.reduce((s, e) => s + e.transferSize, 0),
  files: files.length,
};
"""


@dataclass(frozen=True, slots=True)
class LoadRun:
    rows_ms: float  # navigation -> every row shown
    dcl_ms: float
    load_ms: float
    transferred: int


@dataclass(frozen=True, slots=True)
class Phase:
    """Status changes of `batches` x `batch` pipelines started together, then force stopped."""

    batches: int
    batch: int
    displayed: int  # statuses displayed and matched to their commit
    skipped: int  # commits of a status the list never showed (coalesced)
    display: Latency  # commit -> row attribute, ms
    frame: Latency  # commit -> next animation frame after it, ms
    stream: Latency  # commit -> line read by a plain HTTP client, ms

    def target_met(self) -> bool:
        return self.display.p99 <= TARGET_P99_MS


@dataclass(frozen=True, slots=True)
class ConsoleResult:
    pipelines: int
    phases: list[Phase]  # one pipeline at a time, then bursts
    loads: list[LoadRun]
    files_bytes: int  # console/ files, uncompressed


def _epoch_ms(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000


class _Follower:
    """A plain client of GET /v0/watch: every (name, status, since) with its arrival."""

    def __init__(self, base: str) -> None:
        self.commits: list[tuple[str, str, float, float]] = []
        self._status: dict[str, str] = {}  # each pipeline's last status seen
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._base = base
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> _Follower:
        self._thread.start()
        if not self._synced.wait(30):
            raise BenchError("GET /v0/watch sent no snapshot")
        return self

    def __exit__(self, *exc: object) -> None:
        # The thread ends at its next line or when the stack's Envoy goes
        # (a daemon: it cannot keep the benchmark alive).
        self._stop.set()

    def _follow(self) -> None:
        with (
            httpx.Client(base_url=self._base, timeout=httpx.Timeout(5, read=None)) as client,
            contextlib.suppress(httpx.HTTPError),
            client.stream("GET", "/v0/watch") as r,
        ):
            for line in r.iter_lines():
                arrived = time.time() * 1000
                if self._stop.is_set():
                    return
                event = json.loads(line)
                if event.get("synced"):
                    self._synced.set()
                p = event.get("pipeline")
                if p is None or not p["name"].startswith(PREFIX):
                    continue
                name, status = p["name"], p["deployment_status"]
                # Status changes only: the snapshot's and those of other writes
                # (storage, runtime details) were committed before.
                changed = self._synced.is_set() and self._status.get(name) != status
                with self._changed:
                    self._status[name] = status
                    self._changed.notify_all()
                if changed:
                    since = _epoch_ms(p["deployment_status_since"])
                    self.commits.append((name, status, since, arrived))

    def wait_all(self, names: list[str], status: str, timeout: float = 60) -> None:
        """Until every one of `names` is in `status`, as the stream says: no polling,
        which would load the manager with GETs while its latency is measured."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: all(self._status.get(n) == status for n in names), timeout
            ):
                raise BenchError(f"{names} did not all reach {status} in {timeout} s")


def _load(driver: Any, base: str, pipelines: int, wait: Callable[..., Any]) -> LoadRun:
    started = time.perf_counter()
    driver.get(base + "/")
    wait(
        lambda d: len(d.find_elements("css selector", "#pipelines tr[data-pipeline]")) >= pipelines
    )
    rows_ms = (time.perf_counter() - started) * 1000
    figures = driver.execute_script(LOAD_FIGURES)
    return LoadRun(rows_ms, figures["dcl"], figures["load"], int(figures["transferred"]))


def _cycle(stack: Stack, follower: _Follower, names: list[str]) -> None:
    """Starts `names` together, waits for Running, force-stops them together."""
    for name in names:
        r = stack.post(name, "start")
        if r.status_code != 202:
            raise BenchError(f"start {name}: {r.status_code} {r.text}")
    follower.wait_all(names, "Running")
    for name in names:
        r = stack.post(name, "stop", force="true")
        if r.status_code != 202:
            raise BenchError(f"stop {name}: {r.status_code} {r.text}")
    follower.wait_all(names, "Stopped")


def _match(
    marks: list[list[Any]], commits: list[tuple[str, str, float, float]]
) -> tuple[list[float], list[float], int]:
    """(display ms, frame ms, commits never displayed) for the marks after the snapshot."""
    by_key: dict[tuple[str, str], list[float]] = {}
    for name, status, since, _ in commits:
        by_key.setdefault((name, status), []).append(since)
    display: list[float] = []
    frame: list[float] = []
    shown: set[tuple[str, str, float]] = set()
    for name, status, t, painted in marks:
        earlier = [s for s in by_key.get((name, status), []) if s <= t]
        if not earlier:
            continue
        since = max(earlier)
        if (name, status, since) in shown:
            continue  # the same commit again (a reconnect's snapshot, a duplicate)
        shown.add((name, status, since))
        display.append(t - since)
        if painted:
            frame.append(painted - since)
    commits_seen = {(n, s, since) for n, s, since, _ in commits}
    return display, frame, len(commits_seen - shown)


@contextlib.contextmanager
def _browser() -> Iterator[Any]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


def _phase(
    driver: Any,
    wait: Callable[..., Any],
    stack: Stack,
    follower: _Follower,
    names: list[str],
    *,
    batches: int,
    batch: int,
    progress: Callable[[str], None],
) -> Phase:
    driver.execute_script("window.__marks.length = 0")
    first = len(follower.commits)
    for b in range(batches):
        progress(f"console: {batch} started then force stopped ({b + 1}/{batches})")
        start = (b * batch) % len(names)
        _cycle(stack, follower, names[start : start + batch])
    # The last Stopped reaches the page through the same stream: wait for it to show.
    last = names[((batches - 1) * batch) % len(names)]
    row = f'tr[data-pipeline="{last}"]'
    wait(lambda d: d.find_element("css selector", row).get_attribute("data-status") == "Stopped")
    marks: list[list[Any]] = driver.execute_script("return window.__marks")
    commits = follower.commits[first:]
    display, frame, skipped = _match(marks, commits)
    if not display:
        raise BenchError("the console displayed no status change")
    return Phase(
        batches=batches,
        batch=batch,
        displayed=len(display),
        skipped=skipped,
        display=Latency.of(display),
        frame=Latency.of(frame or [float("nan")]),
        stream=Latency.of([arrived - since for _, _, since, arrived in commits]),
    )


def run(
    stack: Stack,
    *,
    pipelines: int,
    singles: int,
    bursts: int,
    burst: int,
    loads: int,
    progress: Callable[[str], None],
) -> ConsoleResult:
    """`singles` pipelines started then stopped one at a time, then `bursts` x `burst` together."""
    from selenium.webdriver.support.ui import WebDriverWait

    assets = console_assets(CONSOLE_DIR)
    if not assets:
        raise BenchError(f"no console files in {CONSOLE_DIR}")
    names = [f"{PREFIX}{i:03d}" for i in range(pipelines)]
    progress(f"console: creating {pipelines} pipelines")
    for name in names:
        stack.create(name)
    base = f"http://127.0.0.1:{stack.rest_port}"
    with _browser() as driver:
        wait = WebDriverWait(driver, 60).until
        progress(f"console: {loads} page loads")
        runs = [_load(driver, base, pipelines, wait) for _ in range(loads)]
        driver.execute_script(OBSERVER)
        with _Follower(base) as follower:
            phases = [
                _phase(driver, wait, stack, follower, names, batches=n, batch=k, progress=progress)
                for n, k in ((singles, 1), (bursts, burst))
            ]
    return ConsoleResult(
        pipelines=pipelines,
        phases=phases,
        loads=runs,
        files_bytes=sum(a.file.stat().st_size for a in assets if a.url != "/"),
    )


def section(r: ConsoleResult) -> list[str]:
    def cells(lat: Latency) -> str:
        return f"{lat.p50:>8.1f} {lat.p99:>8.1f} {lat.max:>8.1f}"

    transferred = median([float(x.transferred) for x in r.loads])
    lines = [f"Web console (headless Chromium), {r.pipelines} pipelines listed"]
    for ph in r.phases:
        together = "one at a time" if ph.batch == 1 else f"{ph.batch} together"
        lines += [
            f"  {ph.batches * ph.batch} pipelines started then force stopped, {together}: "
            f"{ph.displayed} status changes displayed ({ph.skipped} coalesced away)",
            f"  {'  commit -> ... (ms)':<46} {'p50':>8} {'p99':>8} {'max':>8}",
            f"  {'  line read by a plain client (GET /v0/watch)':<46} {cells(ph.stream)}",
            f"  {'  row shown in the console (DOM)':<46} {cells(ph.display)}",
            f"  {'  next frame after it':<46} {cells(ph.frame)}",
            f"    console / plain client, p99: {ratio(ph.display.p99, ph.stream.p99):.2f}x; "
            f"target p99 <= {TARGET_P99_MS:.0f} ms: {ph.display.p99:.1f} ms, "
            f"{'met' if ph.target_met() else 'NOT met'}",
        ]
    return [
        *lines,
        f"  page load (median of {len(r.loads)}): every row shown "
        f"{median([x.rows_ms for x in r.loads]):.0f} ms, DOMContentLoaded "
        f"{median([x.dcl_ms for x in r.loads]):.0f} ms, load "
        f"{median([x.load_ms for x in r.loads]):.0f} ms",
        f"  page size: {transferred / 1024:.1f} KiB transferred ({r.files_bytes / 1024:.1f} KiB "
        f"of files), budget {PAGE_BUDGET_BYTES // 1024} KiB: "
        f"{'met' if transferred <= PAGE_BUDGET_BYTES else 'NOT met'}",
    ]


def as_json(r: ConsoleResult) -> tuple[dict[str, Any], dict[str, bool]]:
    doc = asdict(r)
    targets = {
        f"console_display_p99_le_100_ms_{ph.batch}_together": ph.target_met() for ph in r.phases
    }
    targets["console_page_le_300_kib"] = (
        median([float(x.transferred) for x in r.loads]) <= PAGE_BUDGET_BYTES
    )
    return doc, targets
