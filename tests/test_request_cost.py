"""bench.request_cost and bench.bare_server work: figures come out, consistent with each other.

Speed is not asserted here (it belongs in the benchmark): only that the
measurement runs against a real manager and Envoy, counts requests on both
servers and both paths, and that its figures agree with one another.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
from stopcock.v1 import pipeline_service_pb2 as pb
from stopcock.v1 import pipeline_service_pb2_grpc as pb_grpc

from bench import request_cost
from tests.support import Stack

pytestmark = pytest.mark.e2e


def test_schedstat_counts_this_process_cpu() -> None:
    before = request_cost.schedstat_ns(os.getpid())
    sum(i * i for i in range(200_000))  # some CPU work
    assert request_cost.schedstat_ns(os.getpid()) > before > 0
    assert request_cost.schedstat_ns(2**22 + 1) == 0  # no such process: nothing, no error


def test_figures_are_medians_and_the_ratio_pairs_each_round() -> None:
    Run = request_cost.Run
    # Per request: bare 100, 200, 400 µs; manager 150, 220, 400 µs.
    bare = [Run(10, 1_000_000), Run(10, 2_000_000), Run(5, 2_000_000)]
    manager = [Run(10, 1_500_000), Run(10, 2_200_000), Run(4, 1_600_000)]
    cost = request_cost._path_cost("grpc", bare, manager)
    assert (cost.bare_us, cost.manager_us) == (200, 220)
    assert cost.round_ratios == (1.5, 1.1, 1.0)
    assert cost.ratio == 1.1  # the middle round's, not 220 / 200
    assert (cost.bare_requests, cost.manager_requests) == (25, 24)
    assert cost.met and not request_cost._path_cost("grpc", bare[:1], manager[:1]).met


def test_bare_server_answers_check_health_only() -> None:
    with request_cost.bare_server() as bare, grpc.insecure_channel(f"127.0.0.1:{bare.port}") as ch:
        stub = pb_grpc.PipelineServiceStub(ch)
        assert stub.CheckHealth(pb.CheckHealthRequest(), timeout=10).status == "healthy"
        with pytest.raises(grpc.RpcError) as err:
            stub.GetPipeline(pb.GetPipelineRequest(name="p"), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_measure_direct_and_through_envoy(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    try:
        stack.start_manager()
        stack.start_envoy()
        assert stack.manager is not None
        cost = request_cost.measure(
            stack.grpc_port,
            stack.manager.pid,
            rounds=2,
            seconds=0.3,
            envoy_port=stack.rest_port,
            concurrency=2,
            warmup=0.1,
        )
    finally:
        stack.close()
    assert cost.envoy is not None
    for path in (cost.direct, cost.envoy):
        assert path.bare_requests > 0 and path.manager_requests > 0
        assert path.bare_us > 0 and path.manager_us > 0
        assert len(path.round_ratios) == 2 and all(r > 0 for r in path.round_ratios)
        assert path.ratio == pytest.approx(sum(path.round_ratios) / 2)  # the median of two
    assert (cost.direct.path, cost.envoy.path) == ("grpc", "envoy")
    assert cost.ratio == cost.direct.ratio
    assert cost.requests == cost.direct.bare_requests + cost.direct.manager_requests
    assert "ratio" in request_cost.render(cost)
