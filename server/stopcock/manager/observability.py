"""What operators watch: Prometheus metrics, and JSON log lines with context.

Metrics are served in Prometheus text format on their own port
(STOPCOCK_METRICS_PORT, default 9464, on STOPCOCK_BIND_ADDRESS):
  stopcock_rpc_requests_total{method,code}       every RPC, REST ones included
  stopcock_rpc_duration_seconds{method}          latency histogram
  stopcock_pipelines{deployment_status}          pipelines by status (at scrape time)
  stopcock_pipeline_transitions_total{from,to}   deployment status changes
  stopcock_checkpoint_duration_seconds           checkpoints (explicit, periodic, suspend)
  stopcock_checkpoint_size_bytes
  stopcock_suspend_duration_seconds              stop?force=false -> Stopped
  stopcock_suspend_size_bytes                    the final checkpoint of a suspend
  stopcock_runtime_exits_total{reason}           runtimes that ended unasked
  stopcock_runtime_readoptions_total             runtimes found alive by a restarted manager
  stopcock_lease_claims_total                    pipelines this replica claimed (PostgreSQL)
  stopcock_lease_lapses_total                    times this replica's leases lapsed (no heartbeat)

Logs are one JSON object per line: time, level, logger, message, and the
`pipeline` and `request_id` in effect (context variables set by the request
interceptor and by each pipeline's actor), so one request or one pipeline
can be followed across the manager's log. Envoy's `x-request-id` is reused
for REST calls, so the id matches Envoy's.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from stopcock.grpc_handlers import Handler, Interceptor, metadata_value

pipeline_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("pipeline", default=None)
request_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request", default=None)

# Registered in no registry here: each manager's registry (manager_registry)
# collects them.
RPC_REQUESTS = Counter("stopcock_rpc_requests", "RPCs handled", ["method", "code"], registry=None)
RPC_DURATION = Histogram(
    "stopcock_rpc_duration_seconds",
    "RPC latency",
    ["method"],
    registry=None,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TRANSITIONS = Counter(
    "stopcock_pipeline_transitions",
    "Deployment status changes",
    ["from", "to"],
    registry=None,
)
_SIZE_BUCKETS = tuple(float(1 << n) for n in range(12, 36, 2))  # 4 KiB .. 32 GiB
_TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
CHECKPOINT_DURATION = Histogram(
    "stopcock_checkpoint_duration_seconds",
    "Checkpoint duration (copy, fsync, publish)",
    registry=None,
    buckets=_TIME_BUCKETS,
)
CHECKPOINT_SIZE = Histogram(
    "stopcock_checkpoint_size_bytes",
    "Checkpoint size",
    registry=None,
    buckets=_SIZE_BUCKETS,
)
SUSPEND_DURATION = Histogram(
    "stopcock_suspend_duration_seconds",
    "Suspend: stop?force=false accepted -> Stopped",
    registry=None,
    buckets=_TIME_BUCKETS,
)
SUSPEND_SIZE = Histogram(
    "stopcock_suspend_size_bytes",
    "Size of a suspend's final checkpoint",
    registry=None,
    buckets=_SIZE_BUCKETS,
)
RUNTIME_EXITS = Counter(
    "stopcock_runtime_exits",
    "Runtime processes that ended without being asked",
    ["reason"],
    registry=None,
)
READOPTIONS = Counter(
    "stopcock_runtime_readoptions",
    "Runtime processes re-adopted after a manager restart",
    registry=None,
)
LEASE_CLAIMS = Counter(
    "stopcock_lease_claims",
    "Pipelines this replica claimed from a dead (or no) owner",
    registry=None,
)
LEASE_LAPSES = Counter(
    "stopcock_lease_lapses",
    "Times this replica's leases lapsed for want of a heartbeat",
    registry=None,
)
RUNTIMES_WATCHED = Gauge(
    "stopcock_runtimes_watched",
    "Runtimes whose status this manager follows, by what finds a hang "
    "(template: the kernel tells their template, free; pings: HTTP/2 pings every second)",
    ["by"],
    registry=None,
)


_PROCESS_COLLECTORS = (
    RPC_REQUESTS,
    RPC_DURATION,
    TRANSITIONS,
    CHECKPOINT_DURATION,
    CHECKPOINT_SIZE,
    SUSPEND_DURATION,
    SUSPEND_SIZE,
    RUNTIME_EXITS,
    READOPTIONS,
    LEASE_CLAIMS,
    LEASE_LAPSES,
    RUNTIMES_WATCHED,
)


class PipelinesByStatus(Collector):
    """stopcock_pipelines{deployment_status}, computed when Prometheus scrapes."""

    def __init__(self, statuses: Callable[[], Iterable[str]]) -> None:
        self._statuses = statuses

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "stopcock_pipelines", "Pipelines by deployment status", labels=["deployment_status"]
        )
        counts: dict[str, int] = {}
        for status in list(self._statuses()):
            counts[status] = counts.get(status, 0) + 1
        for status, count in sorted(counts.items()):
            family.add_metric([status], count)
        yield family


def manager_registry(statuses: Callable[[], Iterable[str]]) -> CollectorRegistry:
    """One manager's registry: the process's counters, and its own pipelines gauge.

    Per manager, so that two managers in one process (tests) each expose
    their own pipelines without a duplicate registration.
    """
    registry = CollectorRegistry(auto_describe=True)
    for collector in _PROCESS_COLLECTORS:
        registry.register(collector)
    registry.register(PipelinesByStatus(statuses))
    return registry


def serve_metrics(address: str, port: int, registry: CollectorRegistry) -> None:
    start_http_server(port, addr=address, registry=registry)


# -- request context and RPC metrics -------------------------------------------


def _code_name(context: Any) -> str:
    code = context.code()
    if code is None:
        return "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


# uuid.uuid4()'s version and variant bits, set on 128 random bits without
# building a UUID object (that costs several µs, per call without an id).
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_request_id() -> str:
    """A fresh request id: what uuid.uuid4().hex returns (32 hex digits, a version-4 UUID)."""
    return f"{int.from_bytes(os.urandom(16)) & _UUID4_CLEAR | _UUID4_SET:032x}"


class _MethodMetrics:
    """One method's RPC metrics, the label children looked up once, not per call.

    `labels()` validates and joins the label values and takes the metric's
    lock on every call; a child, once made, is the same object for the life
    of the process (nothing here removes children).
    """

    __slots__ = ("_codes", "_duration", "_method")

    def __init__(self, method: str) -> None:
        self._method = method
        self._duration = RPC_DURATION.labels(method)
        self._codes: dict[str, Any] = {}

    def end(self, context: Any, started: float, failed: bool) -> None:
        code = _code_name(context)
        if failed and code == "OK":
            code = "UNKNOWN"
        counter = self._codes.get(code)
        if counter is None:
            counter = self._codes[code] = RPC_REQUESTS.labels(self._method, code)
        counter.inc()
        self._duration.observe(time.perf_counter() - started)


_NAMES_A_PIPELINE: dict[type, bool] = {}


def _names_a_pipeline(message_type: type) -> bool:
    """Whether requests of this type have a `name` (a pipeline's): asked once per type.

    getattr(request, "name", None) on a message without the field raises
    and catches an AttributeError inside protobuf, on every call.
    """
    named = _NAMES_A_PIPELINE.get(message_type)
    if named is None:
        descriptor = getattr(message_type, "DESCRIPTOR", None)
        named = descriptor is not None and "name" in descriptor.fields_by_name
        _NAMES_A_PIPELINE[message_type] = named
    return named


def _pipeline_of(request: Any) -> str | None:
    if not _names_a_pipeline(type(request)):
        return None
    name = request.name
    return name if isinstance(name, str) and name else None


def _instrumented(handler: Handler, method: str) -> Handler:
    """`handler`, timed and counted, with the pipeline it names in the log context.

    Built once per method (RequestInterceptor caches it): it holds nothing
    of one call. The request id is not set here but by the interceptor, in
    the call's context, which the handler's task inherits.
    """
    metrics = _MethodMetrics(method)
    kinds = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None or handler.stream_unary is not None:
        # Answers once. A client stream names its pipeline in its first
        # message, which is not read here: no pipeline in the context.
        named = handler.unary_unary is not None
        inner: Any = handler.unary_unary if named else handler.stream_unary

        async def answer(request: Any, context: Any) -> Any:
            pipeline_var.set(_pipeline_of(request) if named else None)
            started = time.perf_counter()
            try:
                result = await inner(request, context)
            except BaseException:
                metrics.end(context, started, failed=True)
                raise
            metrics.end(context, started, failed=False)
            return result

        if named:
            return grpc.unary_unary_rpc_method_handler(answer, **kinds)
        return grpc.stream_unary_rpc_method_handler(answer, **kinds)
    if handler.unary_stream is not None:
        inner_stream: Any = handler.unary_stream  # an async generator under grpc.aio

        async def stream(request: Any, context: Any) -> Any:
            pipeline_var.set(_pipeline_of(request))
            started = time.perf_counter()
            failed = True
            try:
                async for item in inner_stream(request, context):
                    yield item
                failed = False
            finally:
                metrics.end(context, started, failed)

        return grpc.unary_stream_rpc_method_handler(stream, **kinds)
    return handler  # bidirectional streams (reflection's): not counted, as ever


class RequestInterceptor(Interceptor):
    """Counts and times every RPC, and sets the request id and pipeline for logs.

    It wraps the handler the rest of the chain (authentication included)
    chose, so refused calls are counted with their code too.

    What it does per call is kept small, since every request pays it: the
    chain answers every call of a method with the same handler object (gRPC
    keeps one per registered method; authentication passes it through), so
    the instrumented handler is made once per method and reused while the
    chain keeps choosing that handler. A handler made for one call (a
    refusal) gets a wrapper of its own, as every call once did.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}
        self.calls = 0  # calls started, ever (idle_gc.IdleCollector looks for quiet)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        # Set in the call's own task, before the rest of the chain: gRPC runs
        # the handler in a task made after this returns, which copies this
        # context, so the handler (and authentication) log with the id.
        # Envoy's x-request-id is reused, so REST calls match Envoy's id.
        self.calls += 1
        request_id = metadata_value(details.invocation_metadata, "x-request-id")
        request_var.set(request_id or new_request_id())
        handler: Handler | None = await continuation(details)
        if handler is None:
            return handler  # type: ignore[return-value]
        method: str = details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _instrumented(handler, method.rsplit("/", 1)[-1])
        self._wrapped[method] = (handler, wrapped)
        return wrapped


# -- logs --------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        pipeline = pipeline_var.get()
        if pipeline:
            entry["pipeline"] = pipeline
        request = request_var.get()
        if request:
            entry["request_id"] = request
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
