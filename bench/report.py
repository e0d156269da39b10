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
from dataclasses import asdict, dataclass
from typing import Any

from bench.force_stop import Latency, StopCycle
from bench.load import Comparison, LoadRun
from bench.stats import median, percentile, ratio

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
    p50 = ratio(c.med(c.subject, "p50_ms"), c.med(c.baseline, "p50_ms"))
    p99 = ratio(c.med(c.subject, "p99_ms"), c.med(c.baseline, "p99_ms"))
    pairs = c.pair_ratios()
    spread = f"   rounds: {min(pairs):.2f}-{max(pairs):.2f}x" if pairs else ""
    return [
        f" {c.title}",
        _runs_row(f"{c.baseline_label} (no-op)", c.baseline),
        _runs_row(c.subject_label, c.subject),
        _row("ratio subject / no-op", [f"{c.rps_ratio():.2f}x", f"{p50:.2f}x", f"{p99:.2f}x"])
        + spread,
    ]


def render(
    setup: Setup,
    rest: Comparison,
    grpc: Comparison,
    stops: list[StopCycle],
    observations: list[str],
) -> str:
    manager = Latency.of([c.manager_ms for c in stops])
    client = Latency.of([c.client_ms for c in stops])
    start = Latency.of([c.start_ms for c in stops])
    rest_ratio = rest.rps_ratio()
    head = _row(
        "",
        ["req/s", "p50 ms", "p99 ms", "errors"],
        "   CPU cores: manager / Envoy / client / other",
    )
    lines = [
        f"Stopcock benchmark: {setup.cpus} CPUs, load average {setup.load_before:.2f} -> "
        f"{setup.load_after:.2f}, {setup.elapsed_s:.0f} s in all",
        "",
        f"GetPipeline vs the no-op CheckHealth: {setup.connections} requests in flight, "
        f"{setup.rounds} interleaved rounds x {setup.duration_s} s each, medians",
        head,
        *comparison_table(rest),
        *comparison_table(grpc),
        f"  target: REST GetPipeline throughput >= {REST_RATIO_TARGET:.2f}x the no-op: "
        f"{rest_ratio:.2f}x, {_met(rest_ratio >= REST_RATIO_TARGET)}",
        "",
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
        "",
        "Observations",
        *(f"  - {o}" for o in observations),
    ]
    return "\n".join(lines)


def _cells(latency: Latency) -> list[str]:
    return [f"{latency.p50:.1f}", f"{latency.p99:.1f}", f"{latency.max:.1f}"]


def observe(
    setup: Setup,
    comparisons: list[Comparison],
    stops: list[StopCycle],
    leftovers: list[str],
) -> list[str]:
    """What a reader should know before trusting the figures."""
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
    if leftovers:
        notes.append("processes left behind: " + "; ".join(leftovers))
    else:
        notes.append("no process left behind (manager, Envoy, runtimes, load generators)")
    return notes


_ROLES = (("manager", "manager_cores"), ("Envoy", "envoy_cores"), ("client", "client_cores"))


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
        if c.med(c.subject, a) > 0.02
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


def as_json(
    setup: Setup,
    comparisons: list[Comparison],
    stops: list[StopCycle],
    observations: list[str],
) -> dict[str, Any]:
    manager = Latency.of([c.manager_ms for c in stops])
    rest = comparisons[0]
    return {
        "setup": asdict(setup),
        "throughput": [
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
        ],
        "force_stop": {
            "manager_ms": asdict(manager),
            "client_ms": asdict(Latency.of([c.client_ms for c in stops])),
            "start_ms": asdict(Latency.of([c.start_ms for c in stops])),
            "cycles": [asdict(c) for c in stops],
        },
        "targets": {
            "rest_getpipeline_rps_ratio_ge_0_8": rest.rps_ratio() >= REST_RATIO_TARGET,
            "force_stop_p50_le_50ms": manager.p50 <= STOP_P50_TARGET_MS,
            "force_stop_p99_le_200ms": manager.p99 <= STOP_P99_TARGET_MS,
        },
        "observations": observations,
    }
