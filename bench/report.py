"""The benchmark's report: a table for people, a JSON document for tools.

Every throughput figure is printed beside its no-op baseline with the ratio,
because only the ratio is comparable between runs on a shared machine. The
targets are checked and printed as met / not met; they are reported, not
asserted (the process exits 0 either way). "Observations" lists what a
reader should know before trusting the figures: errors under load, which
process was CPU-bound, noisy rounds, runtime processes outliving a stop,
processes left behind.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench import bodies as bodies_bench
from bench import console as console_bench
from bench import failover as failover_bench
from bench import ingress as ingress_bench
from bench import scale as scale_bench
from bench import suspend as suspend_bench
from bench.bodies import BodiesResult, QueryBodies, QueryRun, SizeBodies
from bench.console import ConsoleResult
from bench.failover import FailoverResult
from bench.force_stop import Latency, StopCycle
from bench.ingress import IngressComparison, IngressRun, median_of
from bench.load import Comparison, LoadRun
from bench.scale import ScaleResult
from bench.stats import median, percentile, ratio
from bench.stores import StoreResult
from bench.suspend import SizeResult

REST_RATIO_TARGET = 0.8  # REST GetPipeline throughput / no-op, at least
STOP_P50_TARGET_MS = 50.0
STOP_P99_TARGET_MS = 200.0
CPU_BOUND = 0.9  # cores: a single-threaded process at this level sets the pace


@dataclass(frozen=True, slots=True)
class Setup:
    cpus: int
    load_before: float
    load_after: float
    connections: int
    rounds: int
    duration_s: int
    cycles: int
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class Figures:
    """What one run measured; a section skipped on the command line is None."""

    rest: Comparison | None = None
    grpc: Comparison | None = None
    stops: list[StopCycle] | None = None
    suspend: list[SizeResult] | None = None
    ingress: list[IngressComparison] | None = None
    bodies: BodiesResult | None = None
    stores: StoreResult | None = None
    failover: FailoverResult | None = None
    scale: ScaleResult | None = None
    console: ConsoleResult | None = None


def _met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def _row(label: str, run_cells: list[str], extra: str = "") -> str:
    return f"  {label:<42}" + "".join(f"{c:>9}" for c in run_cells) + extra


def _runs_row(label: str, runs: list[LoadRun]) -> str:
    def med(attr: str) -> float:
        return Comparison.med(runs, attr)

    cells = [f"{med('rps'):.0f}", f"{med('p50_ms'):.1f}", f"{med('p99_ms'):.1f}"]
    cells.append(str(sum(r.errors for r in runs)))
    cores = [med(a) for a in ("manager_cores", "envoy_cores", "client_cores")]
    cores.append(max(0.0, med("machine_cores") - sum(cores)))
    return _row(label, cells, "   " + " / ".join(f"{c:.2f}" for c in cores))


def comparison_table(c: Comparison) -> list[str]:
    p50 = ratio(median_of(c.subject, "p50_ms"), median_of(c.baseline, "p50_ms"))
    p99 = ratio(median_of(c.subject, "p99_ms"), median_of(c.baseline, "p99_ms"))
    pairs = c.pair_ratios()
    spread = f"   rounds: {min(pairs):.2f}-{max(pairs):.2f}x" if pairs else ""
    return [
        f" {c.title}",
        _runs_row(f"{c.baseline_label} (no-op)", c.baseline),
        _runs_row(c.subject_label, c.subject),
        _row("ratio subject / no-op", [f"{c.rps_ratio():.2f}x", f"{p50:.2f}x", f"{p99:.2f}x"])
        + spread,
    ]


def render(setup: Setup, figures: Figures, observations: list[str]) -> str:
    lines = [
        f"Stopcock benchmark: {setup.cpus} CPUs, load average {setup.load_before:.2f} -> "
        f"{setup.load_after:.2f}, {setup.elapsed_s:.0f} s in all",
    ]
    if figures.rest is not None and figures.grpc is not None:
        lines += ["", *_getpipeline_section(setup, figures.rest, figures.grpc)]
    if figures.stops:
        lines += ["", *_force_stop_section(figures.stops)]
    if figures.suspend:
        lines += ["", *suspend_section(figures.suspend)]
    if figures.ingress:
        lines += ["", *ingress_section(figures.ingress)]
    if figures.bodies is not None and figures.bodies.sizes:
        lines += ["", *bodies_section(figures.bodies)]
    if figures.stores is not None:
        lines += ["", *stores_section(setup, figures.stores)]
    if figures.failover is not None and figures.failover.kills:
        lines += ["", *failover_section(figures.failover)]
    if figures.scale is not None:
        lines += ["", *scale_section(figures.scale)]
    if figures.console is not None:
        lines += ["", *console_bench.section(figures.console)]
    lines += ["", "Observations", *(f"  - {o}" for o in observations)]
    return "\n".join(lines)


def _getpipeline_section(setup: Setup, rest: Comparison, grpc: Comparison) -> list[str]:
    rest_ratio = rest.rps_ratio()
    head = _row(
        "",
        ["req/s", "p50 ms", "p99 ms", "errors"],
        "   CPU cores: manager / Envoy / client / other",
    )
    return [
        f"GetPipeline vs the no-op CheckHealth: {setup.connections} requests in flight, "
        f"{setup.rounds} interleaved rounds x {setup.duration_s} s each, medians",
        head,
        *comparison_table(rest),
        *comparison_table(grpc),
        f"  target: REST GetPipeline throughput >= {REST_RATIO_TARGET:.2f}x the no-op: "
        f"{rest_ratio:.2f}x, {_met(rest_ratio >= REST_RATIO_TARGET)}",
    ]


def _force_stop_section(stops: list[StopCycle]) -> list[str]:
    manager = Latency.of([c.manager_ms for c in stops])
    client = Latency.of([c.client_ms for c in stops])
    start = Latency.of([c.start_ms for c in stops])
    return [
        f"Force stop: {len(stops)} cycles of start -> Running, then "
        "POST /stop?force=true -> Stopped",
        _row("", ["p50 ms", "p99 ms", "max ms"]),
        _row("manager (Stopped since - t before POST)", _cells(manager)),
        _row("client-observed (~1 ms polling)", _cells(client)),
        _row("start -> Running (client, context)", _cells(start)),
        f"  target: p50 <= {STOP_P50_TARGET_MS:.0f} ms: {manager.p50:.1f} ms, "
        f"{_met(manager.p50 <= STOP_P50_TARGET_MS)}; "
        f"p99 <= {STOP_P99_TARGET_MS:.0f} ms: {manager.p99:.1f} ms, "
        f"{_met(manager.p99 <= STOP_P99_TARGET_MS)}",
    ]


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _x(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def _vs(value: float, threshold: float) -> str:
    """`value` as a ratio, with a third decimal when two would print the threshold itself."""
    return f"{value:.3f}x" if round(value, 2) == threshold else f"{value:.2f}x"


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}x" if values else "-"


def _suspend_target(results: list[SizeResult]) -> SizeResult | None:
    """The size the target applies to: 100 MB, or else the largest measured if above."""
    at = [r for r in results if r.target_mb == suspend_bench.TARGET_SIZE_MB]
    return at[0] if at else None


def suspend_section(results: list[SizeResult]) -> list[str]:
    repeats = ", ".join(f"{r.target_mb} MB x{len(r.cycles)}" for r in results)
    lines = [
        "Suspend (POST /stop, force=false -> Stopped) vs write + fsync of as many bytes, "
        f"interleaved repeats ({repeats}), medians",
        f"  {'':<7}{'bytes':>11}{'suspend':>9}{'ckpt':>8}{'raw':>8}{'write':>7}"
        f"{'fsync':>7}{'susp/raw':>10}{'ckpt/raw':>10}{'best s/r':>10}"
        f"{'repeats s/r':>13}{'start':>7}",
    ]
    for r in results:
        raw_w = median([w.write_ms for w in r.raws])
        raw_f = median([w.fsync_ms for w in r.raws])
        best = ratio(min(c.suspend_ms for c in r.cycles), min(w.total_ms for w in r.raws))
        lines.append(
            f"  {f'{r.target_mb} MB':<7}{r.bytes:>11}{_fmt(r.med('suspend_ms')):>9}"
            f"{_fmt(r.med('checkpoint_ms')):>8}{_fmt(r.raw_ms()):>8}{_fmt(raw_w):>7}"
            f"{_fmt(raw_f):>7}{_x(r.suspend_ratio()):>10}{_x(r.checkpoint_ratio()):>10}"
            f"{_x(best):>10}{_spread(r.pair_ratios()):>13}{_fmt(r.med('start_ms'), 0):>7}"
        )
    lines += [
        "  (ms) suspend: POST -> the manager's Stopped since; ckpt: POST -> the final "
        "checkpoint's created_at",
        "  (written, fsynced, renamed; before its manifest); raw: write + fsync + directory "
        "fsync (= write",
        "  + fsync columns); best s/r: fastest suspend / fastest raw; repeats s/r: range of "
        "the repeats'",
        "  ratios; start: start -> Running after each suspend (restore; client-observed, context)",
        "  where a suspend's time goes, median ms from the POST until:",
        f"  {'':<7}{'answered':>10}{'ckpt':>8}{'Suspended':>11}{'Stopping':>10}"
        f"{'gone':>8}{'Stopped':>9}",
    ]
    for r in results:
        lines.append(
            f"  {f'{r.target_mb} MB':<7}{_fmt(r.med('accepted_ms')):>10}"
            f"{_fmt(r.med('checkpoint_ms')):>8}{_fmt(r.med('reported_ms')):>11}"
            f"{_fmt(r.med('stopping_ms')):>10}{_fmt(r.med('gone_ms')):>8}"
            f"{_fmt(r.med('suspend_ms')):>9}"
        )
    lines += [
        "  answered: the POST's 202 (desired status persisted); Suspended: the runtime logs it "
        "(manifest",
        "  written; 1 ms log resolution); Stopping: its since (when the",
        "  5 ms poll saw it); gone: the manager logs the runtime process killed and reaped "
        "(1 ms resolution)",
    ]
    target = _suspend_target(results)
    if target is None:
        lines.append(
            f"  target: {suspend_bench.TARGET_SIZE_MB} MB suspend <= "
            f"{suspend_bench.TARGET_RATIO:.1f}x raw: not measured "
            f"(no {suspend_bench.TARGET_SIZE_MB} MB size in this run)"
        )
    else:
        got = target.suspend_ratio()
        lines.append(
            f"  target: {target.target_mb} MB suspend <= {suspend_bench.TARGET_RATIO:.1f}x raw: "
            f"{_vs(got, suspend_bench.TARGET_RATIO)}, {_met(got <= suspend_bench.TARGET_RATIO)}; "
            f"goal <= {suspend_bench.GOAL_RATIO:.1f}x: {_met(got <= suspend_bench.GOAL_RATIO)} "
            f"(checkpoint only: {target.checkpoint_ratio():.2f}x)"
        )
    return lines


def _ingress_row(label: str, runs: list[IngressRun]) -> str:
    def med(attr: str) -> float:
        return median_of(runs, attr)

    cores = [med(a) for a in ("client_cores", "manager_cores", "envoy_cores", "runtime_cores")]
    other = max(0.0, med("machine_cores") - sum(cores)) if med("machine_cores") > 0 else 0.0
    cells = " / ".join(f"{c:.2f}" for c in [*cores, other])
    return f"  {label:<44}{med('rows_per_s'):>10.0f}{med('seconds'):>8.2f}   {cells}"


def ingress_section(comparisons: list[IngressComparison]) -> list[str]:
    first = comparisons[0]
    lines = [
        f"Ingress: {first.batches} batches x {first.batch_rows} rows "
        f"({first.body_bytes / 1e6:.1f} MB of JSON each) per run, "
        f"{len(first.subject)} interleaved rounds, medians",
        f"  {'':<44}{'rows/s':>10}{'s/run':>8}   CPU cores: this process / manager / Envoy / "
        "runtime / other",
    ]
    for c in comparisons:
        who = "1 client" if c.clients == 1 else f"{c.clients} concurrent clients"
        lines += [
            _ingress_row("json.loads + executemany (baseline)", c.baseline),
            _ingress_row(f"REST ingress, {who}", c.subject),
            f"  {'ratio ingress / baseline':<44}{_x(c.rows_ratio()):>10}"
            f"   rounds: {_spread(c.pair_ratios())}",
        ]
    got = first.rows_ratio()
    lines.append(
        f"  target: ingress ({first.clients} client{'s' if first.clients > 1 else ''}) >= "
        f"{ingress_bench.TARGET_RATIO:.2f}x the baseline: {_vs(got, ingress_bench.TARGET_RATIO)}, "
        f"{_met(got >= ingress_bench.TARGET_RATIO)}"
    )
    return lines


def _size_label(mb: int) -> str:
    return f"{mb // 1024} GiB" if mb % 1024 == 0 else f"{mb} MiB"


def _other(machine: float, ours: list[float]) -> float:
    return max(0.0, machine - sum(ours)) if machine > 0 else 0.0


def _bodies_cores(runs: list[IngressRun]) -> str:
    def med(attr: str) -> float:
        return median_of(runs, attr)

    cores = [med(a) for a in ("client_cores", "manager_cores", "envoy_cores", "runtime_cores")]
    return " / ".join(f"{c:.2f}" for c in [*cores, _other(med("machine_cores"), cores)])


def _rss_target(result: BodiesResult) -> SizeBodies:
    """The size the memory target applies to: the largest measured (1 GiB by default)."""
    return max(result.sizes, key=lambda s: s.mb)


def _rise(before: dict[str, float], peak: dict[str, float], role: str) -> str:
    return f"{before.get(role, math.nan):.0f} -> {peak.get(role, math.nan):.0f}"


def _rss(size: SizeBodies, role: str) -> str:
    return _rise(size.memory_before, size.memory_peak, role)


def _query_row(label: str, q: QueryRun) -> str:
    cores = [q.client_cores, q.manager_cores, q.envoy_cores, q.runtime_cores]
    cells = " / ".join(f"{c:.2f}" for c in [*cores, _other(q.machine_cores, cores)])
    return (
        f"  {label:<36}{q.first_row_ms:>9.1f}{q.rows_per_s:>10.0f}"
        f"{q.bytes / q.seconds / bodies_bench.MB:>8.1f}{q.seconds:>8.1f}   {cells}"
    )


def bodies_section(result: BodiesResult) -> list[str]:
    lines = [
        "Bodies: one NDJSON body per request through Envoy, one client, vs json.loads + "
        "executemany of",
        f"  the same rows ({{id, name}}, {result.name_bytes}-byte names, {result.row_bytes} "
        "bytes a row) into an in-memory table, one transaction per body; medians",
        f"  {'size':<8}{'rows/body':>10}{'runs':>5}{'ingress/s':>11}{'MiB/s':>7}"
        f"{'baseline/s':>12}{'ratio':>8}{'repeats':>12}",
    ]
    for s in result.sizes:
        rate = median_of(s.subject, "rows_per_s")
        mib_s = rate * result.row_bytes / bodies_bench.MB
        lines.append(
            f"  {_size_label(s.mb):<8}{s.rows:>10}{len(s.subject):>5}{rate:>11.0f}{mib_s:>7.1f}"
            f"{median_of(s.baseline, 'rows_per_s'):>12.0f}{_x(s.rows_ratio()):>8}"
            f"{_spread(s.pair_ratios()):>12}"
        )
    lines.append(
        "  CPU cores: ingress: client / manager / Envoy / runtime / other; "
        "baseline: this process / other"
    )
    for s in result.sizes:
        base = median_of(s.baseline, "client_cores")
        base_other = _other(median_of(s.baseline, "machine_cores"), [base])
        lines.append(
            f"  {_size_label(s.mb):<8}{_bodies_cores(s.subject):<34}{base:.2f} / {base_other:.2f}"
        )
    for s in result.sizes:
        sent = median([t for t in s.sent_s if not math.isnan(t)])
        applied = median([t for t in s.apply_s if not math.isnan(t)])
        if s.mb < bodies_bench.WARM_UP_MB or math.isnan(applied):
            continue  # an apply of a few ms is below the 50 ms sampling
        total = median_of(s.subject, "seconds")
        what = f"  {_size_label(s.mb)}: the apply (database files growing -> answer) took "
        what += f"{applied:.1f} of {total:.1f} s"
        if not math.isnan(sent):
            what += f"; the last byte left the client at {sent:.1f} s (generated while sent)"
        lines.append(what)
    verdicts = [
        f"{_size_label(s.mb)} {_vs(s.rows_ratio(), bodies_bench.TARGET_RATIO)} "
        f"{_met(s.rows_ratio() >= bodies_bench.TARGET_RATIO)}"
        for s in result.sizes
    ]
    lines += [
        f"  target: ingress >= {bodies_bench.TARGET_RATIO:.2f}x the baseline at every size: "
        + "; ".join(verdicts),
        "  memory during the timed ingress runs, MiB: before the first -> highest 50 ms sample; "
        "RSS of",
        "  runtime, manager, Envoy; VmHWM: the runtime's lifetime peak (a fresh pipeline per "
        "size); database:",
        "  the runtime's tmpfs files (the table, and the WAL a transaction grows; not in its "
        "RSS); spool: on disk",
        f"  {'size':<8}{'runtime':>12}{'VmHWM':>7}{'manager':>12}{'Envoy':>12}"
        f"{'database':>14}{'spool':>7}{'samples':>9}",
    ]
    for s in result.sizes:
        lines.append(
            f"  {_size_label(s.mb):<8}{_rss(s, 'runtime'):>12}{s.runtime_hwm_mib:>7.0f}"
            f"{_rss(s, 'manager'):>12}{_rss(s, 'Envoy'):>12}{_rss(s, 'database'):>14}"
            f"{s.memory_peak.get('spool', math.nan):>7.0f}{s.samples:>9}"
        )
    big = _rss_target(result)
    peak = max(big.runtime_hwm_mib, big.memory_peak.get("runtime", 0.0))
    lines.append(
        f"  target: runtime peak RSS <= {bodies_bench.RSS_TARGET_MIB:.0f} MiB during the "
        f"{_size_label(big.mb)} ingress: {peak:.0f} MiB (VmHWM), "
        f"{_met(peak <= bodies_bench.RSS_TARGET_MIB)}"
    )
    if result.query is not None:
        lines += ["", *_query_section(result.query)]
    return lines


def _query_section(q: QueryBodies) -> list[str]:
    peaks = ", ".join(
        f"{role} {_rise(q.memory_before, q.memory_peak, role)}" for role in bodies_bench.ROLES
    )
    client = q.memory_peak.get("client", math.nan)
    worst = max(q.memory_peak.values())
    return [
        f"Query: {q.sql} over the largest table ({q.table_rows} rows, "
        f"{q.subject.bytes / 1e6:.0f} MB of NDJSON), read streaming",
        f"  {'':<36}{'1st row ms':>9}{'rows/s':>10}{'MiB/s':>8}{'s':>8}   CPU cores: "
        "client / manager / Envoy / runtime / other",
        _query_row("REST query (bench.reader process)", q.subject),
        _query_row("sqlite3 cursor + json.dumps (baseline)", q.baseline),
        f"  {'ratio query / baseline':<36}"
        f"{_x(ratio(q.subject.first_row_ms, q.baseline.first_row_ms)):>9}{_x(q.rows_ratio()):>10}",
        f"  peak RSS, MiB (before -> highest 50 ms sample): {peaks}; the reader {client:.0f}; "
        f"runtime VmHWM {q.runtime_hwm_mib:.0f}",
        f"  bounded memory (no target given; the ingress goal, {bodies_bench.RSS_TARGET_MIB:.0f} "
        f"MiB, for every process): {worst:.0f} MiB at most, "
        f"{_met(worst <= bodies_bench.RSS_TARGET_MIB)}",
    ]


def _store_pair(c: Comparison, pg_cores: list[float], what: str) -> list[str]:
    """SQLite (the baseline) and PostgreSQL runs of one measurement, and their ratios."""
    p50 = ratio(median_of(c.subject, "p50_ms"), median_of(c.baseline, "p50_ms"))
    p99 = ratio(median_of(c.subject, "p99_ms"), median_of(c.baseline, "p99_ms"))
    return [
        f" {c.title}: {what}",
        _runs_row(f"{c.baseline_label}", c.baseline),
        _runs_row(f"{c.subject_label}", c.subject)
        + f"   (PostgreSQL server {median(pg_cores):.2f})",
        _row("ratio PostgreSQL / SQLite", [_x(c.rps_ratio()), _x(p50), _x(p99)])
        + f"   rounds: {_spread(c.pair_ratios())}",
    ]


def stores_section(setup: Setup, r: StoreResult) -> list[str]:
    pg = r.postgres_settings
    acked, committed = sum(r.acknowledged.values()), sum(r.committed.values())
    return [
        "Stores: one manager on SQLite vs one on PostgreSQL "
        f"({pg.get('server_version', '?')}, embedded, local socket; fsync={pg.get('fsync')}, "
        f"synchronous_commit={pg.get('synchronous_commit')}),",
        f"  each with its own Envoy; {setup.rounds} interleaved rounds x {setup.duration_s} s "
        "each, medians",
        _row(
            "",
            ["req/s", "p50 ms", "p99 ms", "errors"],
            "   CPU cores: manager / Envoy / client / other",
        ),
        *_store_pair(
            r.writes,
            r.write_pg_cores,
            f"{r.clients} clients over {r.pipelines} never-started pipelines, one commit each",
        ),
        *_store_pair(r.gets, r.get_pg_cores, f"{r.connections} connections"),
        "  writes acknowledged / committed (refresh_version growth): "
        + ", ".join(
            f"{label} {r.acknowledged.get(label, 0)} / {r.committed.get(label, 0)}"
            for label in ("SQLite", "PostgreSQL")
        )
        + (", all committed" if acked == committed else ", NOT EQUAL"),
        "  (PostgreSQL server: its cores during the PostgreSQL runs, inside 'other'; "
        "no target for this section)",
    ]


def failover_section(f: FailoverResult) -> list[str]:
    lease = Latency.of([k.lease_ms / 1000 for k in f.kills])
    adopted = Latency.of([k.adopted_ms / 1000 for k in f.kills])
    restart = Latency.of([k.restart_ms / 1000 for k in f.kills])
    target = failover_bench.TARGET_P99_S
    fastest = min(k.lease_ms for k in f.kills) / 1000
    return [
        f"Failover: {f.replicas} replicas on PostgreSQL, lease TTL {f.ttl_s:g} s, one Running "
        f"pipeline; {len(f.kills)} x kill -9 of its owner",
        _row("", ["p50 s", "p99 s", "max s"]),
        _row(
            f"kill -> lease held by another ({failover_bench.POLL_SECS * 1000:.0f} ms poll)",
            _cells(lease, 2),
        ),
        _row("kill -> runtime re-adopted in place", _cells(adopted, 2)),
        _row("restart of the killed replica (context)", _cells(restart, 2)),
        f"  target: failover p99 <= {target:.0f} s: {lease.p99:.2f} s, "
        f"{_met(lease.p99 <= target)} (TTL {f.ttl_s:g} s; fastest {fastest:.2f} s)",
    ]


def _scale_targets(r: ScaleResult) -> dict[str, tuple[str, str, bool]]:
    """Each scale target: (the figure, the target, met), keyed as in the JSON."""
    b = scale_bench
    list_p99 = scale_bench.list_latency(r)[1]
    pss_max = scale_bench.runtime_pss(r)[1]
    return {
        "scale_start_rate_ge_50_per_s": (
            f"{r.start_rate:.1f}/s",
            f">= {b.START_RATE_TARGET:.0f}/s",
            r.start_rate >= b.START_RATE_TARGET,
        ),
        "scale_idle_cpu_le_5pct_core": (
            f"{r.idle_total_pct:.2f}%",
            f"<= {b.IDLE_TARGET_PCT:.0f}%",
            r.idle_total_pct <= b.IDLE_TARGET_PCT,
        ),
        "scale_runtime_pss_le_5mib": (
            f"max {pss_max:.2f} MiB",
            f"<= {b.PSS_TARGET_MIB:.0f} MiB",
            pss_max <= b.PSS_TARGET_MIB,
        ),
        "scale_list_p99_le_50ms": (
            f"p99 {list_p99:.1f} ms",
            f"<= {b.LIST_P99_TARGET_MS:.0f} ms",
            list_p99 <= b.LIST_P99_TARGET_MS,
        ),
        "scale_get_p99_ratio_le_1_5": (
            f"{_vs(r.get_ratio, b.GET_RATIO_TARGET)}",
            f"<= {b.GET_RATIO_TARGET:.1f}x",
            r.get_ratio <= b.GET_RATIO_TARGET,
        ),
        "scale_restart_readopt_le_5s": (
            f"{r.restart_s:.2f} s",
            f"<= {b.RESTART_TARGET_S:.0f} s",
            r.restart_s <= b.RESTART_TARGET_S,
        ),
        "scale_force_stop_le_5s": (
            f"{r.stop_worst_s:.2f} s",
            f"<= {b.STOP_TARGET_S:.0f} s",
            r.stop_worst_s <= b.STOP_TARGET_S,
        ),
        "scale_request_cost_ratio_le_1_3": (
            f"{r.request_cost.ratio:.2f}x direct, {r.request_cost.envoy_ratio:.2f}x via Envoy",
            f"<= {b.REQUEST_COST_TARGET:.1f}x",
            max(r.request_cost.ratio, r.request_cost.envoy_ratio) <= b.REQUEST_COST_TARGET,
        ),
    }


def scale_section(r: ScaleResult) -> list[str]:
    targets = _scale_targets(r)

    def verdict(key: str) -> str:
        got, want, ok = targets[key]
        return f"    -> {got}, target {want}: {_met(ok)}"

    b = scale_bench
    list_p50, list_p99 = b.list_latency(r)
    pss_med, pss_max = b.runtime_pss(r)
    per = r.idle_pct["runtimes"] / r.pipelines if r.pipelines else math.nan
    one, loaded = r.get_one, r.get_loaded
    cost = r.request_cost
    return [
        f"Scale: {r.pipelines} pipelines started together, {r.defined} defined, one manager "
        "(SQLite); status watched by",
        f"  {r.watch}; {b.CONCURRENCY} gRPC calls in flight for the bulk create / start / stop",
        f"  bulk start: {r.pipelines} x StartPipeline -> the last Running since: {r.start_s:.2f} "
        f"s; the calls answered after {r.start_requests_s:.2f} s; all Running seen after "
        f"{r.start_seen_s:.2f} s",
        f"  ({r.start_polls} polls, {r.start_watch_s:.2f} s in ListPipelines calls)",
        verdict("scale_start_rate_ge_50_per_s"),
        f"  idle CPU over {r.idle_window_s:g} s, % of one core (schedstat, every thread): "
        f"manager {r.idle_pct['manager']:.2f}, Envoy {r.idle_pct['Envoy']:.2f}, template "
        f"{r.idle_pct['template']:.2f},",
        f"  runtimes {r.idle_pct['runtimes']:.2f} ({per:.4f} each); total "
        f"{r.idle_total_pct:.2f} (the whole machine: {r.idle_machine_pct:.0f}, others' work "
        "included)",
        verdict("scale_idle_cpu_le_5pct_core"),
        f"  PSS (smaps_rollup), MiB: runtime median {pss_med:.2f}, max {pss_max:.2f} (all "
        f"{len(r.runtime_pss_mib)}); template {r.template_pss_mib:.1f}, manager "
        f"{r.manager_pss_mib:.1f}, Envoy {r.envoy_pss_mib:.1f}",
        verdict("scale_runtime_pss_le_5mib"),
        f"  GET /v0/pipelines?selector=status through Envoy ({r.defined} pipelines, "
        f"{r.list_bytes / 1e6:.2f} MB), {len(r.list_ms)} sequential: p50 {list_p50:.1f} ms, "
        f"p99 {list_p99:.1f} ms, max {max(r.list_ms):.1f} ms",
        f"  the same over gRPC straight to the manager: p50 "
        f"{percentile(r.list_grpc_ms, 50):.1f} ms, p99 {percentile(r.list_grpc_ms, 99):.1f} ms",
        verdict("scale_list_p99_le_50ms"),
        f"  GET /v0/pipelines/{{name}} (wrk, {b.GET_CONNECTIONS} connections, {b.GET_RUNS} runs, "
        "medians):",
        _row("", ["req/s", "p50 ms", "p99 ms", "errors"]),
        _row(
            "one pipeline defined (first)",
            [f"{one.rps:.0f}", f"{one.p50_ms:.2f}", f"{one.p99_ms:.2f}", str(one.errors)],
        ),
        _row(
            f"{loaded.defined} defined, {loaded.running} running",
            [
                f"{loaded.rps:.0f}",
                f"{loaded.p50_ms:.2f}",
                f"{loaded.p99_ms:.2f}",
                str(loaded.errors),
            ],
        ),
        _row(
            "ratio loaded / one",
            [
                _x(ratio(loaded.rps, one.rps)),
                _x(ratio(loaded.p50_ms, one.p50_ms)),
                _x(r.get_ratio),
            ],
        ),
        verdict("scale_get_p99_ratio_le_1_5"),
        "  manager CPU per no-op request (CheckHealth) vs a bare grpc.aio server, same client, "
        "same run:",
        f"  direct gRPC: bare {cost.bare_us:.0f} us, manager {cost.manager_us:.0f} us, "
        f"{cost.ratio:.2f}x; through Envoy: bare {cost.envoy_bare_us:.0f} us, manager "
        f"{cost.envoy_manager_us:.0f} us, {cost.envoy_ratio:.2f}x (median of per-round ratios)",
        verdict("scale_request_cost_ratio_le_1_3"),
        f"  restart: kill -9 of the manager -> the new one answers {r.restart_up_s:.2f} s -> all "
        f"{r.pipelines} Running, same deployment and pid, {r.readoptions} re-adoptions counted: "
        f"{r.restart_s:.2f} s",
        verdict("scale_restart_readopt_le_5s"),
        f"  force stop: {r.pipelines} x StopPipeline(force) answered {r.stop_requests_s:.2f} s, "
        f"the last Stopped since {r.stop_s:.2f} s (seen {r.stop_seen_s:.2f} s), no runtime "
        f"process left {r.stop_gone_s:.2f} s",
        verdict("scale_force_stop_le_5s"),
        "  CPU cores, manager / Envoy / template / runtimes / this process / other, during:",
        *(
            f"  {what:<16}" + _scale_cores(cores)
            for what, cores in (
                ("the start", r.start_cores),
                ("REST lists", r.list_cores),
                ("the restart", r.restart_cores),
                ("the force stop", r.stop_cores),
            )
        ),
        f"  (context) {r.defined} created over gRPC and compiled in {r.create_s:.1f} s; the "
        f"manager held {r.manager_fds} descriptors with {r.pipelines} running, soft limit "
        f"{r.nofile_soft}",
    ]


def _scale_cores(cores: dict[str, float]) -> str:
    keys = (*scale_bench.PARTS, "bench")
    ours = [cores[k] for k in keys if k in cores]
    cells = [f"{cores[k]:.2f}" if k in cores else "-" for k in keys]
    return " / ".join([*cells, f"{_other(cores['machine'], ours):.2f}"])


def _scale_notes(r: ScaleResult) -> list[str]:
    notes = []
    needed = scale_bench.nofile_needed(r.pipelines)
    notes.append(
        f"scale: the manager ran with a soft RLIMIT_NOFILE of {r.nofile_soft} (it raises its "
        f"own to the hard limit) and held {r.manager_fds} descriptors with {r.pipelines} running"
        + (
            f"; a default soft limit of 1024 would not do for {r.pipelines} runtimes"
            if max(needed, r.manager_fds) > 1024
            else ""
        )
    )
    if r.idle_machine_pct - r.idle_total_pct > 20:
        notes.append(
            f"scale: during the idle window other processes used "
            f"{r.idle_machine_pct - r.idle_total_pct:.0f}% of a core (not in the idle figure, "
            "which counts the stack's own processes only)"
        )
    each = r.idle_pct["runtimes"] / r.pipelines
    notes.append(
        f"scale: an idle runtime used {each:.3f}% of a core ({each * 10:.2f} ms of CPU every "
        f"second): {scale_bench.IDLE_TARGET_PCT:.0f}% of a core for the whole system allows "
        f"~{scale_bench.IDLE_TARGET_PCT / each:.0f} idle runtimes and nothing else"
        if each > 0
        else "scale: the idle runtimes used no measurable CPU"
    )
    busiest = max(scale_bench.PARTS, key=lambda k: r.start_cores.get(k, 0.0))
    notes.append(
        f"scale: during the bulk start the busiest part was the {busiest} at "
        f"{r.start_cores[busiest]:.2f} cores; the machine was "
        f"{r.start_cores['machine']:.2f} of {os.cpu_count() or 1} CPUs busy; per started "
        f"runtime, CPU ms: manager "
        f"{r.start_cores['manager'] * r.start_seen_s / r.pipelines * 1000:.1f}, template "
        f"{r.start_cores['template'] * r.start_seen_s / r.pipelines * 1000:.1f}, the runtime "
        f"itself {r.start_cores['runtimes'] * r.start_seen_s / r.pipelines * 1000:.1f} "
        f"(the watch's lists: {r.start_watch_s:.2f} s of calls)"
    )
    if r.restart_up_s > scale_bench.RESTART_TARGET_S:
        notes.append(
            f"scale: after the kill the new manager answered CheckHealth only after "
            f"{r.restart_up_s:.1f} s, {r.restart_s - r.restart_up_s:.1f} s before the last "
            f"re-adoption was seen: it re-adopts ({r.restart_cores['manager']:.2f} cores, "
            f"~{r.restart_cores['manager'] * r.restart_s / r.pipelines * 1000:.0f} ms of CPU a "
            "runtime) before it serves, so the API (and /metrics) is down for that long"
        )
    spread = r.get_one.run_p99_ms + r.get_loaded.run_p99_ms
    if max(spread) > 3 * min(spread):
        notes.append(
            "scale: GET p99 of the runs (one pipeline, then loaded): "
            + ", ".join(f"{v:.1f}" for v in r.get_one.run_p99_ms)
            + " / "
            + ", ".join(f"{v:.1f}" for v in r.get_loaded.run_p99_ms)
            + " ms: noisy machine, the ratio is not interleaved (the baseline must come first)"
        )
    return notes


def _cells(latency: Latency, digits: int = 1) -> list[str]:
    return [f"{v:.{digits}f}" for v in (latency.p50, latency.p99, latency.max)]


def observe(setup: Setup, figures: Figures, leftovers: list[str]) -> list[str]:
    """What a reader should know before trusting the figures."""
    comparisons = [c for c in (figures.rest, figures.grpc) if c is not None]
    stops = figures.stops or []
    notes = []
    for c in comparisons:
        other = c.med(c.baseline + c.subject, "machine_cores") - sum(
            c.med(c.baseline + c.subject, a) for _, a in _ROLES
        )
        if other >= 0.2:
            notes.append(
                f"{c.title}: other processes used {other:.2f} cores during the runs (column "
                "'other'): noise that interleaving spreads over both sides of each ratio"
            )
    for c in comparisons:
        for label, runs in ((c.baseline_label, c.baseline), (c.subject_label, c.subject)):
            errors = sum(r.errors for r in runs)
            if errors:
                detail = "; ".join(r.error_detail for r in runs if r.error_detail)
                notes.append(f"{c.title} {label}: {errors} errors under load ({detail})")
        notes += _cpu_notes(c, setup.cpus)
        pairs = c.pair_ratios()
        if pairs and max(pairs) - min(pairs) > 0.15:
            notes.append(
                f"{c.title}: round ratios spread {min(pairs):.2f}-{max(pairs):.2f}: noisy "
                "machine, the median is the figure to use"
            )
    early = sum(1 for s in stops if s.manager_ms < 0)
    if early:
        notes.append(f"{early} stops have a Stopped time before the POST (clock or stale state)")
    alive = sum(1 for s in stops if s.runtime_alive_when_stopped)
    if alive:
        notes.append(f"{alive} of {len(stops)} stops: runtime process still alive at Stopped")
    failed = [s.deployment_error for s in stops if s.deployment_error]
    if failed:
        notes.append(f"{len(failed)} stops set a deployment error, e.g. {failed[0]}")
    if stops:
        n = len(stops)
        rank = max(1, math.ceil(0.99 * n))
        which = "the slowest stop" if rank == n else f"the stop ranked {rank} of {n}"
        notes.append(
            f"nearest-rank p99 of {n} stops is {which}; manager p90 "
            f"{percentile([s.manager_ms for s in stops], 90):.1f} ms"
        )
        gap = median([s.client_ms - s.manager_ms for s in stops])
        notes.append(f"observing Stopped over REST added {gap:.1f} ms (median) to the stop")
    notes += _suspend_notes(figures.suspend or [])
    notes += _ingress_notes(figures.ingress or [], setup.cpus)
    if figures.bodies is not None:
        notes += _bodies_notes(figures.bodies, setup.cpus)
    if figures.stores is not None:
        notes += _stores_notes(figures.stores, setup.cpus)
    if figures.failover is not None:
        notes += _failover_notes(figures.failover)
    if figures.scale is not None:
        notes += _scale_notes(figures.scale)
    if leftovers:
        notes.append("processes left behind: " + "; ".join(leftovers))
    else:
        notes.append("no process left behind (manager, Envoy, runtimes, load generators)")
    return notes


_ROLES = (("manager", "manager_cores"), ("Envoy", "envoy_cores"), ("client", "client_cores"))


def _stores_notes(r: StoreResult, cpus: int) -> list[str]:
    notes = []
    for c in (r.writes, r.gets):
        for label, runs in ((c.baseline_label, c.baseline), (c.subject_label, c.subject)):
            errors = sum(run.errors for run in runs)
            if errors:
                detail = "; ".join(run.error_detail for run in runs if run.error_detail)
                notes.append(f"store {c.title} {label}: {errors} errors under load ({detail})")
        notes += [f"store {n}" for n in _cpu_notes(c, cpus)[1:]]  # who set the pace
        pairs = c.pair_ratios()
        if pairs and max(pairs) - min(pairs) > 0.15:
            notes.append(
                f"store {c.title}: round ratios spread {min(pairs):.2f}-{max(pairs):.2f}: noisy "
                "machine, the median is the figure to use"
            )
    for label, acked in r.acknowledged.items():
        committed = r.committed.get(label, 0)
        if committed != acked:
            notes.append(
                f"store {label}: {acked} writes acknowledged but refresh_version grew by "
                f"{committed} (a write answered without its commit, or a commit unanswered: "
                "a timeout)"
            )
    return notes


def _failover_notes(f: FailoverResult) -> list[str]:
    notes = []
    ttl_ms = f.ttl_s * 1000
    slow = [k for k in f.kills if k.lease_ms > ttl_ms + 1000]
    if slow:
        notes.append(
            f"failover: {len(slow)} of {len(f.kills)} claims took over TTL + 1 s: "
            + ", ".join(f"{k.lease_ms / 1000:.2f} s (replica {k.killed})" for k in slow)
        )
    early = [k for k in f.kills if k.lease_ms < ttl_ms * 5 / 6 - 500]
    if early:
        notes.append(
            f"failover: {len(early)} claims came before the killed replica's row could have "
            "expired (TTL - one heartbeat period): check the lease fencing"
        )
    jumps = [k for k in f.kills if k.epoch_after != k.epoch_before + 1]
    if jumps:
        notes.append(
            f"failover: {len(jumps)} claims raised the epoch by more than one (claimed more "
            "than once between two polls)"
        )
    takers: dict[int, int] = {}
    for k in f.kills:
        takers[k.new_owner] = takers.get(k.new_owner, 0) + 1
    adopt = [k.adopted_ms - k.lease_ms for k in f.kills]
    notes.append(
        "failover: the lease is lost when the killed replica's row expires, TTL after its "
        f"last heartbeat (sent every TTL/6), then claimed by a survivor's next re-sync (every "
        f"0.5 s, or on a notification): expected between ~{f.ttl_s * 5 / 6:.1f} and "
        f"~{f.ttl_s + 0.5:.1f} s; re-adoption after the claim took {median(adopt):.0f} ms "
        f"(median, max {max(adopt):.0f}); new owners by replica: "
        + ", ".join(f"{i}: {n}" for i, n in sorted(takers.items()))
    )
    return notes


# The phases of a suspend, in order: (SuspendCycle attribute, what ends there).
_PHASES = (
    ("accepted_ms", "the POST answered (desired status persisted)"),
    ("checkpoint_ms", "the checkpoint written, fsynced and renamed (created_at)"),
    ("reported_ms", "the runtime logging Suspended (manifest written)"),
    ("stopping_ms", "the manager going Stopping"),
    ("gone_ms", "the runtime process gone (killed, its memory freed)"),
    ("suspend_ms", "Stopped"),
)


def _suspend_notes(results: list[SizeResult]) -> list[str]:
    notes = []
    for r in results:
        cycles = r.cycles
        where = f"suspend {r.target_mb} MB"
        alive = sum(1 for c in cycles if c.runtime_alive_when_stopped)
        if alive:
            notes.append(f"{where}: {alive} of {len(cycles)} runtimes still alive at Stopped")
        failed = [c.deployment_error for c in cycles if c.deployment_error]
        if failed:
            notes.append(f"{where}: {len(failed)} suspends set a deployment error: {failed[0]}")
        pairs = r.pair_ratios()
        if pairs and max(pairs) > 1.5 * min(pairs):
            notes.append(
                f"{where}: repeats' suspend/raw spread {min(pairs):.2f}-{max(pairs):.2f}x: "
                "noisy (see the raw and suspend figures per repeat in --json)"
            )
        raw_fast = min(w.total_ms for w in r.raws)
        slow_raw = sum(1 for w in r.raws if w.total_ms > 2 * raw_fast + 10)
        if r.warmup_raw_ms > 2 * r.raw_ms() + 10 or slow_raw:
            notes.append(
                f"{where}: the discarded warm-up raw write took {r.warmup_raw_ms:.0f} ms, "
                f"{slow_raw} of {len(r.raws)} timed ones over twice the fastest "
                f"({raw_fast:.0f} ms): writes into page-cache memory the VM has not backed "
                "yet (or has taken back) cost several times more; either side can hit it"
            )
        if r.suspend_ratio() > 3:
            notes.append(
                f"{where}: suspend/raw is {r.suspend_ratio():.1f}x because a suspend has fixed "
                f"costs (HTTP, a manager commit, the push to the runtime, the manifest, the "
                f"kill, two more commits): {r.med('suspend_ms'):.1f} ms against "
                f"{r.raw_ms():.1f} ms of raw I/O"
            )
        # Where the time goes: the longest phase of the median suspend.
        marks = [(attr, what, r.med(attr)) for attr, what in _PHASES]
        known = [(attr, what, at) for attr, what, at in marks if not math.isnan(at)]
        spans = []
        previous, label = 0.0, "the POST"
        for _, what, at in known:
            spans.append((at - previous, f"{label} -> {what}"))
            previous, label = at, what
        total = r.med("suspend_ms")
        if spans and total > 0:
            longest, what = max(spans)
            notes.append(
                f"{where}: the longest phase is {what}: {longest:.1f} of {total:.1f} ms "
                f"(medians); after the checkpoint, {total - r.med('checkpoint_ms'):.1f} ms"
            )
    return notes


def _ingress_notes(comparisons: list[IngressComparison], cpus: int) -> list[str]:
    notes = []
    for c in comparisons:
        who = f"ingress ({c.clients} client{'s' if c.clients > 1 else ''})"
        runtime = median_of(c.subject, "runtime_cores")
        machine = median_of(c.subject, "machine_cores")
        ours = sum(
            median_of(c.subject, a)
            for a in ("client_cores", "manager_cores", "envoy_cores", "runtime_cores")
        )
        pace = []
        if runtime >= 0.75:
            pace.append(
                f"the runtime used {runtime:.2f} cores (it parses, checks and inserts on one "
                "database thread, plus its gRPC server: it sets the pace)"
            )
        if machine >= 0.9 * cpus:
            pace.append(f"{machine:.2f} of {cpus} CPUs busy (the machine is saturated)")
        if machine - ours >= 0.2:
            pace.append(f"other processes used {machine - ours:.2f} cores")
        if pace:
            notes.append(f"{who}: " + "; ".join(pace))
        pairs = c.pair_ratios()
        if pairs and max(pairs) - min(pairs) > 0.15:
            notes.append(
                f"{who}: round ratios spread {min(pairs):.2f}-{max(pairs):.2f}: noisy machine, "
                "the median is the figure to use"
            )
    return notes


def _bodies_notes(result: BodiesResult, cpus: int) -> list[str]:
    notes = []
    for s in result.sizes:
        where = f"bodies {_size_label(s.mb)} ingress"
        roles = ("client_cores", "manager_cores", "envoy_cores", "runtime_cores")
        cores = {a: median_of(s.subject, a) for a in roles}
        machine = median_of(s.subject, "machine_cores")
        busiest = max(cores, key=lambda a: cores[a])
        pace = [
            f"the busiest process is the {busiest.removesuffix('_cores')} at "
            f"{cores[busiest]:.2f} cores"
        ]
        if machine >= 0.9 * cpus:
            pace.append(f"{machine:.2f} of {cpus} CPUs busy (the machine is saturated)")
        other = _other(machine, list(cores.values()))
        if other >= 0.2:
            pace.append(f"other processes used {other:.2f} cores")
        notes.append(f"{where}: " + "; ".join(pace))
        pairs = s.pair_ratios()
        if len(pairs) > 1 and max(pairs) - min(pairs) > 0.15:
            notes.append(
                f"{where}: repeats' ratios spread {min(pairs):.2f}-{max(pairs):.2f}: noisy "
                "machine, the median is the figure to use"
            )
    for s in result.sizes:
        base, runtime = median_of(s.baseline, "client_cores"), median_of(s.subject, "runtime_cores")
        if min(base, runtime) < 0.8:
            notes.append(
                f"bodies {_size_label(s.mb)}: the baseline got {base:.2f} cores, the runtime "
                f"{runtime:.2f} (other work took the rest): the rows/s ratio is as much the "
                "machine's load as the path's; CPU per row (below) is the steadier comparison"
            )
    big = _rss_target(result)
    for role in ("manager", "Envoy"):  # the runtime's own working set is in the target
        rise = big.memory_peak.get(role, 0.0) - big.memory_before.get(role, 0.0)
        if rise >= 64:
            notes.append(
                f"bodies {_size_label(big.mb)}: the {role}'s RSS rose by {rise:.0f} MiB during "
                "the ingress: body bytes in flight, held on the way (the runtime checks the "
                "body more slowly than it arrives)"
            )
    database = big.memory_peak.get("database", 0.0)
    if database > 1.5 * big.body_bytes / bodies_bench.MB:
        notes.append(
            f"bodies {_size_label(big.mb)}: the runtime's database files in tmpfs peaked at "
            f"{database:.0f} MiB with bodies of {big.body_bytes / bodies_bench.MB:.0f} MiB: "
            "the table plus the WAL of a body's one transaction (both in memory, outside "
            "the RSS figures)"
        )
    for s in result.sizes:
        path = [_us_per_row(s.subject, a) for a in _PATH]
        notes.append(
            f"bodies {_size_label(s.mb)} ingress: CPU us per row, client / manager / Envoy / "
            f"runtime: {' / '.join(f'{c:.1f}' for c in path)}, together {sum(path):.1f}; "
            f"baseline {_us_per_row(s.baseline, 'client_cores'):.1f} (when the CPUs are the "
            "limit, their quotient is the ratio to expect)"
        )
    q = result.query
    if q is not None:
        r = q.subject
        other = _other(
            r.machine_cores, [r.client_cores, r.manager_cores, r.envoy_cores, r.runtime_cores]
        )
        path = [_us_per_row([r], a) for a in _PATH]
        notes.append(
            f"bodies query: CPU us per row, reader / manager / Envoy / runtime: "
            f"{' / '.join(f'{c:.1f}' for c in path)}, together {sum(path):.1f}; baseline "
            f"{_us_per_row([q.baseline], 'client_cores'):.1f}"
            + (f"; other processes used {other:.2f} cores" if other >= 0.2 else "")
        )
    return notes


_PATH = ("client_cores", "manager_cores", "envoy_cores", "runtime_cores")


def _us_per_row(runs: Sequence[IngressRun | QueryRun], attr: str) -> float:
    """Median over runs of the CPU (us) that `attr`'s process spent per row."""
    return median([float(getattr(r, attr)) / r.rows_per_s * 1e6 for r in runs if r.rows_per_s])


def _us_per_request(runs: list[LoadRun], attrs: tuple[str, ...]) -> float:
    """Median over runs of the CPU (µs) that `attrs` together spent per request."""
    per_run = [sum(float(getattr(r, a)) for a in attrs) / r.rps * 1e6 for r in runs if r.rps]
    return median(per_run)


def _cpu_notes(c: Comparison, cpus: int) -> list[str]:
    """What a GetPipeline costs each process in CPU, and which process set the pace.

    CPU per request hardly depends on the machine's load, unlike throughput:
    when the CPUs are the limit, no-op CPU / GetPipeline CPU is the
    throughput ratio to expect.
    """
    costs = [
        f"{role} {_us_per_request(c.baseline, (a,)):.0f} -> {_us_per_request(c.subject, (a,)):.0f}"
        for role, a in _ROLES
        if median_of(c.subject, a) > 0.02
    ]
    every = tuple(a for _, a in _ROLES)
    base, subject = _us_per_request(c.baseline, every), _us_per_request(c.subject, every)
    notes = [
        f"{c.title}: CPU us per request, no-op -> GetPipeline: {', '.join(costs)}; "
        f"together {base:.0f} -> {subject:.0f}, i.e. {ratio(base, subject):.2f}x "
        "throughput when CPU-bound"
    ]
    for label, runs in ((c.baseline_label, c.baseline), (c.subject_label, c.subject)):
        mgr, cli, machine = (
            c.med(runs, a) for a in ("manager_cores", "client_cores", "machine_cores")
        )
        busy = []
        if machine >= 0.9 * cpus:
            busy.append(f"{machine:.2f} of {cpus} CPUs busy (the machine is saturated)")
        if mgr >= CPU_BOUND:
            busy.append(f"the manager used {mgr:.2f} cores (its Python thread is saturated)")
        if cli >= CPU_BOUND:
            busy.append(f"the load generator used {cli:.2f} cores (it may set the pace)")
        if busy:
            notes.append(f"{c.title} {label}: " + "; ".join(busy))
    return notes


def as_json(setup: Setup, figures: Figures, observations: list[str]) -> dict[str, Any]:
    doc: dict[str, Any] = {"setup": asdict(setup)}
    targets: dict[str, bool] = {}
    comparisons = [c for c in (figures.rest, figures.grpc) if c is not None]
    if comparisons:
        doc["throughput"] = [
            {
                "title": c.title,
                "baseline": c.baseline_label,
                "subject": c.subject_label,
                "rps_ratio": c.rps_ratio(),
                "round_ratios": c.pair_ratios(),
                "baseline_runs": [asdict(r) for r in c.baseline],
                "subject_runs": [asdict(r) for r in c.subject],
            }
            for c in comparisons
        ]
    if figures.rest is not None:
        targets["rest_getpipeline_rps_ratio_ge_0_8"] = figures.rest.rps_ratio() >= REST_RATIO_TARGET
    if figures.stops:
        stops = figures.stops
        manager = Latency.of([c.manager_ms for c in stops])
        doc["force_stop"] = {
            "manager_ms": asdict(manager),
            "client_ms": asdict(Latency.of([c.client_ms for c in stops])),
            "start_ms": asdict(Latency.of([c.start_ms for c in stops])),
            "cycles": [asdict(c) for c in stops],
        }
        targets["force_stop_p50_le_50ms"] = manager.p50 <= STOP_P50_TARGET_MS
        targets["force_stop_p99_le_200ms"] = manager.p99 <= STOP_P99_TARGET_MS
    if figures.suspend:
        doc["suspend"] = [
            {
                **{k: v for k, v in asdict(r).items() if k not in ("cycles", "raws")},
                "suspend_ms": r.med("suspend_ms"),
                "checkpoint_ms": r.med("checkpoint_ms"),
                "raw_ms": r.raw_ms(),
                "suspend_ratio": r.suspend_ratio(),
                "checkpoint_ratio": r.checkpoint_ratio(),
                "repeat_ratios": r.pair_ratios(),
                "cycles": [asdict(c) for c in r.cycles],
                "raws": [{**asdict(w), "total_ms": w.total_ms} for w in r.raws],
            }
            for r in figures.suspend
        ]
        target = _suspend_target(figures.suspend)
        if target is not None:
            got = target.suspend_ratio()
            targets["suspend_100mb_ratio_le_2"] = got <= suspend_bench.TARGET_RATIO
            targets["suspend_100mb_ratio_le_1_3_goal"] = got <= suspend_bench.GOAL_RATIO
    if figures.ingress:
        doc["ingress"] = [
            {
                "clients": c.clients,
                "batch_rows": c.batch_rows,
                "batches": c.batches,
                "body_bytes": c.body_bytes,
                "rows_ratio": c.rows_ratio(),
                "round_ratios": c.pair_ratios(),
                "baseline_runs": [asdict(r) for r in c.baseline],
                "subject_runs": [asdict(r) for r in c.subject],
            }
            for c in figures.ingress
        ]
        got = figures.ingress[0].rows_ratio()
        targets["ingress_rows_ratio_ge_0_5"] = got >= ingress_bench.TARGET_RATIO
    if figures.bodies is not None and figures.bodies.sizes:
        doc["bodies"], more = _bodies_json(figures.bodies)
        targets.update(more)
    if figures.stores is not None:
        r = figures.stores
        doc["stores"] = {
            **{
                k: v
                for k, v in asdict(r).items()
                if k not in ("writes", "gets", "write_pg_cores", "get_pg_cores")
            },
            **{
                key: {
                    "title": c.title,
                    "rps_ratio_postgres_sqlite": c.rps_ratio(),
                    "round_ratios": c.pair_ratios(),
                    "postgres_server_cores": cores,
                    "sqlite_runs": [asdict(run) for run in c.baseline],
                    "postgres_runs": [asdict(run) for run in c.subject],
                }
                for key, c, cores in (
                    ("writes", r.writes, r.write_pg_cores),
                    ("get", r.gets, r.get_pg_cores),
                )
            },
        }
    if figures.failover is not None and figures.failover.kills:
        f = figures.failover
        lease = Latency.of([k.lease_ms for k in f.kills])
        doc["failover"] = {
            "ttl_s": f.ttl_s,
            "replicas": f.replicas,
            "lease_ms": asdict(lease),
            "adopted_ms": asdict(Latency.of([k.adopted_ms for k in f.kills])),
            "restart_ms": asdict(Latency.of([k.restart_ms for k in f.kills])),
            "kills": [asdict(k) for k in f.kills],
        }
        targets["failover_p99_le_5s"] = lease.p99 <= failover_bench.TARGET_P99_S * 1000
    if figures.scale is not None:
        sc = figures.scale
        list_p50, list_p99 = scale_bench.list_latency(sc)
        pss_med, pss_max = scale_bench.runtime_pss(sc)
        doc["scale"] = {
            **asdict(sc),
            "start_rate_per_s": sc.start_rate,
            "idle_total_pct_core": sc.idle_total_pct,
            "runtime_pss_median_mib": pss_med,
            "runtime_pss_max_mib": pss_max,
            "list_p50_ms": list_p50,
            "list_p99_ms": list_p99,
            "get_p99_ratio": sc.get_ratio,
            "stop_worst_s": sc.stop_worst_s,
        }
        targets.update({k: ok for k, (_, _, ok) in _scale_targets(sc).items()})
    if figures.console is not None:
        doc["console"], console_targets = console_bench.as_json(figures.console)
        targets.update(console_targets)
    doc["targets"] = targets
    doc["observations"] = observations
    return doc


def _bodies_json(result: BodiesResult) -> tuple[dict[str, Any], dict[str, bool]]:
    targets = {
        f"bodies_ingress_{s.mb}mib_ratio_ge_0_5": s.rows_ratio() >= bodies_bench.TARGET_RATIO
        for s in result.sizes
    }
    big = _rss_target(result)
    peak = max(big.runtime_hwm_mib, big.memory_peak.get("runtime", 0.0))
    targets[f"bodies_runtime_peak_rss_{big.mb}mib_le_256mib"] = peak <= bodies_bench.RSS_TARGET_MIB
    doc: dict[str, Any] = {
        "name_bytes": result.name_bytes,
        "row_bytes": result.row_bytes,
        "sizes": [
            {
                **{k: v for k, v in asdict(s).items() if k not in ("baseline", "subject")},
                "rows_ratio": s.rows_ratio(),
                "repeat_ratios": s.pair_ratios(),
                "baseline_runs": [asdict(r) for r in s.baseline],
                "subject_runs": [asdict(r) for r in s.subject],
            }
            for s in result.sizes
        ],
    }
    if result.query is not None:
        doc["query"] = {**asdict(result.query), "rows_ratio": result.query.rows_ratio()}
    return doc, targets
