"""The proto's REST annotations are exactly the contract's paths."""

from __future__ import annotations

from pathlib import Path

from google.api import annotations_pb2, http_pb2
from stopcock.v1 import pipeline_service_pb2 as pb

CONTRACT = {
    ("post", "/v0/pipelines"),
    ("put", "/v0/pipelines/{name}"),
    ("get", "/v0/pipelines/{name}"),
    ("get", "/v0/pipelines"),
    ("delete", "/v0/pipelines/{name}"),
    ("post", "/v0/pipelines/{name}/start"),
    ("post", "/v0/pipelines/{name}/pause"),
    ("post", "/v0/pipelines/{name}/resume"),
    ("post", "/v0/pipelines/{name}/stop"),
    ("post", "/v0/pipelines/{name}/checkpoint"),
    ("get", "/v0/pipelines/{name}/checkpoint_status"),
    ("post", "/v0/pipelines/{name}/dismiss_error"),
    ("post", "/v0/pipelines/{name}/clear"),
    ("get", "/healthz"),
    ("get", "/v0/cluster_healthz"),
    ("get", "/v0/pipelines/{name}/stats"),
    ("get", "/v0/pipelines/{name}/events"),
    ("get", "/v0/pipelines/{name}/events/{event_id}"),
}


# RPCs without a REST mapping, and the RPC that serves their REST face.
GRPC_ONLY = {"ListPipelines": "ListPipelinesJson"}


def rest_routes() -> set[tuple[str, str]]:
    routes = set()
    service = pb.DESCRIPTOR.services_by_name["PipelineService"]
    for method in service.methods:
        rule: http_pb2.HttpRule = method.GetOptions().Extensions[annotations_pb2.http]
        kind = rule.WhichOneof("pattern")
        if method.name in GRPC_ONLY:
            assert kind is None, f"{method.name} has a REST mapping"
            continue
        assert kind is not None, f"{method.name} has no REST mapping"
        routes.add((kind, getattr(rule, kind)))
    return routes


def test_grpc_only_rpcs_have_a_rest_form_with_the_same_request() -> None:
    methods = pb.DESCRIPTOR.services_by_name["PipelineService"].methods_by_name
    for typed, rest in GRPC_ONLY.items():
        assert methods[rest].input_type is methods[typed].input_type


def test_every_contract_endpoint_is_mapped() -> None:
    assert rest_routes() >= CONTRACT


def test_every_rpc_is_documented_in_the_proto() -> None:
    text = (Path(__file__).parents[1] / "proto/stopcock/v1/pipeline_service.proto").read_text()
    for method in pb.DESCRIPTOR.services_by_name["PipelineService"].methods:
        before = text.split(f"rpc {method.name}(")[0].rstrip().splitlines()[-1].strip()
        assert before.startswith("//"), f"rpc {method.name} has no doc comment"
