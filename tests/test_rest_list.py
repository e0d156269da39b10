"""`GET /v0/pipelines` (ListPipelinesJson): the manager's JSON means what Envoy's would.

The REST list is printed by the manager (api/rendering.py) and passed through
by Envoy, where it used to be ListPipelines transcoded by Envoy. These tests
compare the two field by field, for pipelines in many states: against
json_format's printing of the typed ListPipelines answer (no process), and,
through a real Envoy, against Envoy's own transcoding of the same Pipeline
messages (GET /v0/pipelines/{name} answers `Pipeline`, built by the same
convert.to_proto) and against the typed gRPC ListPipelines. They also check
the cache: reused while a pipeline is unchanged, never stale, and rid of
deleted pipelines.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format
from stopcock import limits
from stopcock.manager.api import convert, rendering
from stopcock.manager.domain import errors
from stopcock.manager.domain.model import PipelineRecord, error_body, evolve, new_record
from stopcock.manager.store.sqlite import SqliteStore
from stopcock.v1 import pipeline_service_pb2 as pb

from tests.support import PROGRAM, Stack, wait_until

T0 = 1_700_000_000_123_456  # µs: a time with microseconds
CHECKPOINTS = {
    "checkpoints": [
        {
            "uuid": "0b8e6f4e-9a0b-4f5e-8d3c-1a2b3c4d5e6f",
            "size": 123_456_789_012,
            "processed_records": 0,
            "fingerprint": 2**60,  # past 2**53: no longer an exact integer as a double
            "ratio": 0.5,
            "big": 1e15,
            "negative": -3,
        }
    ]
}
PROGRAM_INFO = {
    "schema": {
        "inputs": [{"name": "T", "fields": [{"name": "id", "columntype": {"type": "INTEGER"}}]}],
        "outputs": [{"name": "V", "fields": [], "materialized": True}],
    },
    "udf_stubs": "",
}


def varied_records() -> list[PipelineRecord]:
    """Pipelines in many states, with every kind of value a field can hold.

    Fresh ids at every call: convert.to_proto caches messages per (id, version)
    for the whole process, and the tests below change records without the
    store's version discipline.
    """
    base = new_record(
        pipeline_id=str(uuid.uuid4()),
        name="fresh",
        description="",
        runtime_config={},
        program_code="",
        udf_rust="",
        udf_toml="",
        program_config={},
        tags=(),
        at=T0,
    )

    def variant(name: str, **changes: Any) -> PipelineRecord:
        return dataclasses.replace(base, id=str(uuid.uuid4()), name=name, **changes)

    return [
        base,
        variant(
            "compiled",
            description='Ünïcödé ✓ "quoted" <tag> & \\ back\nslash \u2028 😀',
            runtime_config={
                "workers": 4,
                "storage": None,
                "fault_tolerance": {"model": "at_least_once", "checkpoint_interval_secs": 60},
                "ratio": 1.25,
                "negative": -7,
                "list": [1, 2.5, "x", None, True, {}],
                "empty": {},
            },
            program_code=PROGRAM,
            udf_rust="fn f() {}",
            udf_toml="[dependencies]\n",
            program_config={"profile": "optimized", "cache": True, "runtime_version": None},
            tags=("a", "b c", "ü"),
            program_status="Success",
            program_status_since=T0 + 1_000,  # milliseconds only: three digits
            program_info=PROGRAM_INFO,
            version=3,
            program_version=2,
            refresh_version=7,
        ),
        variant(
            "sql-error",
            program_code="CREATE TABLE (",
            program_status="SqlError",
            program_status_since=1_700_000_001_000_000,  # whole seconds: no fraction
            program_error={
                "sql_compilation": {
                    "messages": [{"message": 'near "(": syntax error\n\t\x01', "line": 1}]
                },
                "rust_compilation": None,
                "system_error": None,
            },
        ),
        variant(
            "running",
            deployment_id=str(uuid.UUID(int=44)),
            deployment_initial="running",
            deployment_location="127.0.0.1:40001",
            resources_status="Provisioned",
            resources_desired="Provisioned",
            runtime_status="Running",
            runtime_status_since=T0 + 5,
            runtime_status_details={"suspend": None, "progress": 0.25, "steps": 12},
            runtime_desired="Running",
            runtime_desired_since=T0 + 6,
            deployment_status="Running",
            deployment_desired_status="Running",
            storage_status="InUse",
            storage_status_details=CHECKPOINTS,
            program_status="Success",
            program_info=PROGRAM_INFO,
        ),
        variant(
            "failed",
            deployment_error=error_body(
                "RuntimeExitedUnexpectedly",
                "The runtime exited unexpectedly (exit code 1)",
                {"exit_code": 1, "signal": None, "elapsed": 2.5, "nested": {"list": [1, "a"]}},
            ),
            storage_status="InUse",
            storage_status_details=CHECKPOINTS,
            program_status="Success",
            program_info=PROGRAM_INFO,
        ),
        variant("no-details", storage_status_details={"checkpoints": []}, tags=("",)),
    ]


def canonical(value: Any) -> Any:
    """A JSON value where equal numbers compare equal however they are spelled
    (4, 4.0, 1e+15), and nothing else is loosened (True is not 1)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", int(value) if float(value).is_integer() else float(value))
    if isinstance(value, list):
        return ("list", [canonical(v) for v in value])
    assert isinstance(value, dict), value
    return ("object", {k: canonical(v) for k, v in value.items()})


def assert_same_pipeline(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Field by field, naming the field that differs."""
    assert set(ours) == set(theirs), (sorted(set(ours) ^ set(theirs)), ours.get("name"))
    for field, value in theirs.items():
        assert canonical(ours[field]) == canonical(value), (ours["name"], field)


def integral_floats(value: Any) -> list[Any]:
    """Integral numbers spelled as floats, below 1e15: where Envoy prints integers.

    (From 1e15 Envoy prints exponents, `1e+15`, which json.loads reads as a
    float; the manager prints the integer up to 2**53. The same number.)
    """
    if isinstance(value, float):
        return [value] if value.is_integer() and abs(value) < 1e15 else []
    if isinstance(value, list):
        return [x for v in value for x in integral_floats(v)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in integral_floats(v)]
    return []


# -- without processes: the rendering and its cache ----------------------------


@pytest.mark.parametrize("full", [True, False], ids=["all", "status"])
def test_each_pipeline_prints_as_json_format_prints_the_typed_message(full: bool) -> None:
    for rec in varied_records():
        message = convert.to_proto(rec, full)
        printed = rendering.pipeline_json(message)
        ours = json.loads(printed)
        reference = json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        assert_same_pipeline(ours, reference)
        # Members in field-number order, as Envoy prints them.
        assert list(ours) == [f.name for f in pb.Pipeline.DESCRIPTOR.fields if f.name in ours]
        # Integers print as integers (Envoy's `4`), not json_format's `4.0`.
        assert integral_floats(ours) == [], rec.name
        assert b"\n" not in printed  # compact, one line
    by_name = {
        r.name: json.loads(rendering.pipeline_json(convert.to_proto(r, full)))
        for r in varied_records()
    }
    if full:
        assert by_name["compiled"]["runtime_config"]["workers"] == 4
        assert type(by_name["compiled"]["runtime_config"]["workers"]) is int
        assert by_name["compiled"]["runtime_config"]["ratio"] == 1.25
        assert by_name["compiled"]["program_info"] == PROGRAM_INFO
        assert by_name["sql-error"]["program_error"]["sql_compilation"]["messages"][0]["line"] == 1
    else:
        assert not {"runtime_config", "program_code", "program_info"} & set(by_name["compiled"])
    checkpoint = by_name["running"]["storage_status_details"]["checkpoints"][0]
    assert checkpoint["size"] == 123_456_789_012 and type(checkpoint["size"]) is int
    assert checkpoint["fingerprint"] == float(2**60)  # a double, as the transcoder had it
    assert by_name["running"]["deployment_runtime_status_since"] == "2023-11-14T22:13:20.123461Z"
    assert by_name["failed"]["deployment_error"]["details"]["signal"] is None
    assert by_name["sql-error"]["program_status_since"] == "2023-11-14T22:13:21Z"
    assert by_name["compiled"]["program_status_since"] == "2023-11-14T22:13:20.124456Z"
    assert by_name["fresh"]["tags"] == [] and by_name["fresh"]["description"] == ""


def test_a_list_is_the_array_of_the_typed_list() -> None:
    records = varied_records()
    cache = rendering.PipelineJson()
    for full in (True, False):
        listed = json.loads(cache.list_json(records, full))
        # The REST form of each message (no deployment_location, as Feldera).
        typed = pb.ListPipelinesResponse(
            pipelines=[convert.to_proto(r, full, rest=True) for r in records]
        )
        reference = json_format.MessageToDict(
            typed, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )["pipelines"]
        assert len(listed) == len(reference) == len(records)
        for ours, theirs in zip(listed, reference, strict=True):
            assert_same_pipeline(ours, theirs)
    assert cache.list_json([], True) == b"[]"


def test_an_unchanged_pipeline_is_printed_once_per_selector() -> None:
    cache = rendering.PipelineJson()
    rec = varied_records()[1]
    first = cache.render(rec, True)
    assert cache.render(rec, True) is first  # the cached bytes themselves
    status = cache.render(rec, False)
    assert status != first and cache.render(rec, False) is status
    assert cache.cached(rec.id) == (rec.refresh_version, frozenset({True, False}))


def test_a_changed_pipeline_is_never_served_stale() -> None:
    cache = rendering.PipelineJson()
    rec = varied_records()[1]
    before = json.loads(cache.render(rec, True))
    cache.render(rec, False)
    changed = evolve(rec, description="changed", resources_desired="Provisioned")
    after = json.loads(cache.render(changed, True))
    assert after["description"] == "changed" != before["description"]
    assert after["refresh_version"] == rec.refresh_version + 1
    assert after["deployment_desired_status"] == "Running"
    # The older version's renderings are gone with it: one entry per pipeline.
    assert cache.cached(rec.id) == (changed.refresh_version, frozenset({True}))
    assert json.loads(cache.render(changed, False))["description"] == "changed"


def test_an_older_version_does_not_replace_a_newer_one() -> None:
    """A replica's read that began before another saw a newer row: printed, not kept."""
    cache = rendering.PipelineJson()
    rec = varied_records()[1]
    newer = evolve(rec, description="newer")
    cache.render(newer, True)
    assert json.loads(cache.render(rec, True))["description"] == rec.description
    assert cache.cached(rec.id) == (newer.refresh_version, frozenset({True}))
    assert json.loads(cache.render(newer, True))["description"] == "newer"


def test_deleted_pipelines_leave_the_cache_with_the_next_list() -> None:
    cache = rendering.PipelineJson()
    records = varied_records()
    cache.list_json(records, False)
    assert len(cache) == len(records)
    kept = records[1:3]
    listed = json.loads(cache.list_json(kept, False))
    assert [p["name"] for p in listed] == [r.name for r in kept]
    assert len(cache) == 2
    assert cache.cached(records[0].id) is None
    assert cache.cached(kept[0].id) is not None


def test_a_rendering_over_the_size_bound_is_not_kept() -> None:
    rec = varied_records()[1]
    big = dataclasses.replace(rec, program_code="x" * 2000)
    cache = rendering.PipelineJson(max_cached_bytes=2000)
    assert len(cache.render(big, True)) > 2000
    small = cache.render(big, False)  # no program in the status view
    assert len(small) <= 2000
    assert cache.cached(big.id) == (big.refresh_version, frozenset({False}))
    assert cache.render(big, False) is small


def test_a_list_over_the_answer_limit_is_response_too_large(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = varied_records()
    cache = rendering.PipelineJson()
    size = len(cache.list_json(records, True))
    monkeypatch.setattr(limits, "MAX_RESPONSE_BODY_BYTES", size)
    assert len(cache.list_json(records, True)) == size  # exactly at the limit: served
    monkeypatch.setattr(limits, "MAX_RESPONSE_BODY_BYTES", size - 1)
    with pytest.raises(errors.ApiError) as caught:
        cache.list_json(records, True)
    err = caught.value
    assert (err.http_status, err.error_code) == (500, "ResponseTooLarge")
    assert err.details == {"limit_bytes": size - 1}
    assert "selector=status" in err.message


# -- through a real Envoy --------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose database holds varied_records() before the manager starts.

    "running" names a runtime that does not exist: the manager finds it gone
    and records the error (it changes, which the comparisons allow for).
    """
    stack = Stack(tmp_path_factory.mktemp("rest-list"))
    try:
        stack.data_dir.mkdir(parents=True)
        store = SqliteStore(stack.data_dir / "stopcock.db")
        try:
            for rec in varied_records():
                store.put(rec)
        finally:
            store.close()
        stack.start_manager()
        stack.start_envoy()
        yield stack
    finally:
        stack.close()


def compare_with_envoy(stack: Stack, selector: str | None) -> bool:
    """Each element of the list against Envoy's transcoding of GetPipeline, and against
    the typed ListPipelines. False (try again) if a pipeline changed in between."""
    params = {} if selector is None else {"selector": selector}
    r = stack.rest.get("/v0/pipelines", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert not [h for h in r.headers if h.startswith("grpc-") or h.startswith("x-stopcock")]
    listed: list[dict[str, Any]] = r.json()
    typed = stack.stub.ListPipelines(pb.ListPipelinesRequest(selector=selector or ""))
    if [p["refresh_version"] for p in listed] != [p.refresh_version for p in typed.pipelines]:
        return False
    assert [p["name"] for p in listed] == sorted(p["name"] for p in listed)
    for ours, message in zip(listed, typed.pipelines, strict=True):
        reference = json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        # gRPC's own field, which the REST face leaves out (as Feldera has none).
        reference.pop("deployment_location", None)
        assert_same_pipeline(ours, reference)
        # Envoy's own JSON for the same Pipeline message.
        one = stack.rest.get(f"/v0/pipelines/{ours['name']}", params=params)
        assert one.status_code == 200, one.text
        transcoded = one.json()
        if transcoded["refresh_version"] != ours["refresh_version"]:
            return False
        assert_same_pipeline(ours, transcoded)
        if selector == "status" and ours["name"] in ("fresh", "no-details"):
            # No Struct members, nothing Envoy escapes: the very same bytes.
            assert one.content in r.content, ours["name"]
        # And as Envoy spells its numbers: integers as integers.
        assert integral_floats(ours) == integral_floats(transcoded) == [], ours["name"]
    return True


@pytest.mark.e2e
@pytest.mark.parametrize("selector", [None, "all", "status"])
def test_the_list_matches_envoys_transcoding_in_every_state(
    seeded: Stack, selector: str | None
) -> None:
    names = {r.name for r in varied_records()}
    wait_until(
        lambda: names <= {p["name"] for p in seeded.rest.get("/v0/pipelines").json()},
        "the seeded pipelines to be listed",
    )
    wait_until(lambda: compare_with_envoy(seeded, selector), "a list that stood still")


@pytest.mark.e2e
def test_the_list_follows_every_change_and_deletion(seeded: Stack) -> None:
    def listed(selector: str = "status") -> dict[str, dict[str, Any]]:
        r = seeded.rest.get("/v0/pipelines", params={"selector": selector})
        assert r.status_code == 200, r.text
        return {p["name"]: p for p in r.json()}

    seeded.create("follows")
    before = listed()["follows"]
    edited = {"name": "follows", "program_code": PROGRAM, "description": "edited"}
    r = seeded.rest.put("/v0/pipelines/follows", json=edited)
    assert r.status_code == 200, r.text
    after = listed()["follows"]
    assert after["description"] == "edited"
    # Client metadata moves no counter (as in Feldera), yet the list shows it.
    assert after["refresh_version"] == before["refresh_version"]
    assert listed("all")["follows"]["description"] == "edited"
    r = seeded.rest.patch("/v0/pipelines/follows", json={"runtime_config": {"workers": 2}})
    assert r.status_code == 200, r.text
    assert listed("all")["follows"]["runtime_config"]["workers"] == 2
    assert listed()["follows"]["refresh_version"] > before["refresh_version"]
    assert seeded.rest.delete("/v0/pipelines/follows").status_code == 200
    assert "follows" not in listed() and "follows" not in listed("all")


@pytest.mark.e2e
def test_list_errors_keep_the_contract_shape(seeded: Stack) -> None:
    r = seeded.rest.get("/v0/pipelines", params={"selector": "everything"})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "message": (
            "Unknown selector 'everything': use 'all', 'status' or 'status_with_connectors'"
        ),
        "error_code": "InvalidSelector",
        "details": {
            "selector": "everything",
            "allowed": ["all", "status", "status_with_connectors"],
        },
    }
    r = seeded.rest.get("/v0/pipelines?selector=")
    assert r.status_code == 400 and r.json()["error_code"] == "InvalidRequest", r.text
    r = seeded.rest.get("/v0/pipelines", params={"name": "x"})
    assert r.status_code == 400 and r.json()["error_code"] == "InvalidRequest", r.text


def test_list_pipelines_has_no_rest_binding_of_its_own() -> None:
    """GET /v0/pipelines is ListPipelinesJson's; ListPipelines stays typed gRPC."""
    from google.api import annotations_pb2

    methods = pb.DESCRIPTOR.services_by_name["PipelineService"].methods_by_name
    typed = methods["ListPipelines"].GetOptions().Extensions[annotations_pb2.http]
    assert typed.WhichOneof("pattern") is None
    rest = methods["ListPipelinesJson"].GetOptions().Extensions[annotations_pb2.http]
    assert (rest.get, rest.response_body) == ("/v0/pipelines", "body")
    assert methods["ListPipelinesJson"].input_type is methods["ListPipelines"].input_type
