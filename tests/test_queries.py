"""Queries never hold a pipeline: snapshots, timeouts, cancellation, streaming.

Through Envoy, with real runtime processes. A runaway query (a recursive CTE
that never ends) is the probe: while it runs, ingest, checkpoints and a
suspend must go on; it must end when its client goes away, after
`query_timeout_secs`, or at once when the pipeline suspends.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import pytest
from stopcock.v1 import pipeline_service_pb2 as pb

from tests.support import Stack, wait_until
from tests.test_checkpoints import checkpoint, rows
from tests.test_rest_pipelines import assert_error

pytestmark = [pytest.mark.e2e, pytest.mark.both_stores]

RUNAWAY = (
    "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT COUNT(*) AS n FROM r"
)


def cpu_ticks(pid: int) -> int:
    """The process's user + system CPU time so far, in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def runtime_log(stack: Stack, name: str) -> str:
    path = stack.data_dir / "pipelines" / stack.get(name)["id"] / "run" / "runtime.log"
    text: str = path.read_text()
    return text


class Runaway:
    """A runaway query sent over REST from a thread; `response` once it is answered."""

    def __init__(self, stack: Stack, name: str, timeout: float = 60.0) -> None:
        self.response: httpx.Response | None = None
        self.error: Exception | None = None
        self.done = threading.Event()
        (self._pid,) = stack.runtime_pids(name)
        self._before = cpu_ticks(self._pid)
        url = f"http://127.0.0.1:{stack.rest_port}/v0/pipelines/{name}/query"

        def run() -> None:
            try:
                self.response = httpx.get(url, params={"sql": RUNAWAY}, timeout=timeout)
            except httpx.HTTPError as exc:
                self.error = exc
            finally:
                self.done.set()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        # It runs once the runtime burns CPU (an idle runtime burns none).
        wait_until(lambda: cpu_ticks(self._pid) - self._before > 30, "the query to run")

    def wait(self) -> httpx.Response:
        assert self.done.wait(30), "the query was not answered"
        self._thread.join()
        assert self.response is not None, self.error
        return self.response


def test_a_runaway_query_holds_neither_ingest_nor_checkpoint_nor_suspend(
    stack: Stack, name: str
) -> None:
    stack.create(name)
    stack.start(name)
    assert stack.ingest(name, rows(0, 10)).status_code == 200
    runaway = Runaway(stack, name)

    assert stack.ingest(name, rows(10, 10)).status_code == 200
    assert stack.query(name, "SELECT count(*) AS n FROM t") == [{"n": 20}]
    checkpoint(stack, name)
    assert stack.post(name, "stop").status_code == 202
    stopped = stack.wait_status(name, "Stopped")
    assert stopped["deployment_error"] is None

    # The suspend stopped the query at once: 503, in the contract's shape.
    assert_error(runaway.wait(), 503, "PipelineUnavailable")
    assert "query stopped: suspend" in runtime_log(stack, name)
    stack.start(name)
    assert stack.ids(name) == list(range(20))
    stack.force_stop(name)


def test_a_query_ends_when_its_rest_client_goes_away(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    (pid,) = stack.runtime_pids(name)
    before = cpu_ticks(pid)
    with socket.create_connection(("127.0.0.1", stack.rest_port)) as client:
        target = f"/v0/pipelines/{name}/query?sql={quote(RUNAWAY)}"
        client.sendall(f"GET {target} HTTP/1.1\r\nHost: stopcock\r\n\r\n".encode())
        wait_until(lambda: cpu_ticks(pid) - before > 30, "the query to run")
    # The connection is closed: Envoy cancels the call, the manager the runtime's.
    wait_until(
        lambda: "query stopped: the client went away" in runtime_log(stack, name),
        "the runtime to stop the query",
    )
    stack.force_stop(name)


def test_a_query_ends_when_its_grpc_call_is_cancelled(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    (pid,) = stack.runtime_pids(name)
    before = cpu_ticks(pid)
    call = stack.stub.QueryPipeline(pb.QueryPipelineRequest(name=name, sql=RUNAWAY))
    wait_until(lambda: cpu_ticks(pid) - before > 30, "the query to run")
    call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves it untyped
    wait_until(
        lambda: "query stopped: the client went away" in runtime_log(stack, name),
        "the runtime to stop the query",
    )
    stack.force_stop(name)


def test_a_query_ends_after_query_timeout_secs(stack: Stack, name: str) -> None:
    stack.create(name, runtime_config={"query_timeout_secs": 1})
    assert stack.get(name)["runtime_config"]["query_timeout_secs"] == 1
    stack.start(name)
    r = stack.rest.get(f"/v0/pipelines/{name}/query", params={"sql": RUNAWAY}, timeout=30)
    body = assert_error(r, 400, "QueryTimeout")
    assert body["details"] == {"query_timeout_secs": 1}
    assert "query_timeout_secs (1 s)" in body["message"]
    # gRPC: the same error, as INVALID_ARGUMENT with the body in the trailer.
    with pytest.raises(grpc.RpcError) as info:
        list(stack.stub.QueryPipeline(pb.QueryPipelineRequest(name=name, sql=RUNAWAY)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    pairs: Any = info.value.trailing_metadata() or ()
    trailers = dict(pairs)
    assert json.loads(trailers["x-stopcock-error"])["error_code"] == "QueryTimeout"
    stack.force_stop(name)


@pytest.mark.parametrize("value", [0, -5, "soon", [1]])
def test_a_bad_query_timeout_is_refused(stack: Stack, name: str, value: Any) -> None:
    r = stack.rest.post(
        "/v0/pipelines",
        json={"name": name, "program_code": "", "runtime_config": {"query_timeout_secs": value}},
    )
    assert_error(r, 400, "InvalidRuntimeConfig")
    assert stack.rest.get(f"/v0/pipelines/{name}").status_code == 404


def test_a_query_reads_a_snapshot_and_streams_a_large_answer(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    total = 60_000
    for start in range(0, total, 20_000):
        assert stack.ingest(name, rows(start, 20_000)).status_code == 200
    url = f"/v0/pipelines/{name}/query"
    # No ORDER BY: a scan in insertion order, which would reach rows appended
    # while it runs if it did not read a snapshot.
    with stack.rest.stream("GET", url, params={"sql": "SELECT id FROM t"}) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        first = json.loads(next(lines))
        # Rows ingested while the answer streams are not in it: its snapshot
        # was taken when it began.
        assert stack.ingest(name, rows(total, 10)).status_code == 200
        seen = [first["id"], *(json.loads(line)["id"] for line in lines if line)]
    assert seen == list(range(total))
    assert stack.query(name, "SELECT count(*) AS n FROM t") == [{"n": total + 10}]
    stack.force_stop(name)


ENDLESS = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT x FROM r"


def test_a_query_failing_mid_answer_is_never_a_short_answer(stack: Stack, name: str) -> None:
    """Rows were sent, then the query timed out: the client must see a failure."""
    stack.create(name, runtime_config={"query_timeout_secs": 1})
    stack.start(name)
    # REST: the body is cut off (an incomplete chunked body), not ended cleanly.
    received = 0
    url = f"/v0/pipelines/{name}/query"
    with (
        pytest.raises(httpx.RemoteProtocolError, match="incomplete"),
        stack.rest.stream("GET", url, params={"sql": ENDLESS}, timeout=30) as r,
    ):
        assert r.status_code == 200
        for _ in r.iter_lines():
            received += 1
    assert received > 0
    # gRPC: the rows, then the status, with the error body in the trailer.
    call = stack.stub.QueryPipeline(pb.QueryPipelineRequest(name=name, sql=ENDLESS))
    chunks = 0
    with pytest.raises(grpc.RpcError) as info:
        for _ in call:
            chunks += 1
    assert chunks > 0
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    pairs: Any = info.value.trailing_metadata() or ()
    trailers = dict(pairs)
    assert json.loads(trailers["x-stopcock-error"])["error_code"] == "QueryTimeout"
    assert "x-stopcock-reset" not in trailers  # only REST calls get the reset
    stack.force_stop(name)
