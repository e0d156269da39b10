"""Ingress and ad-hoc queries through Envoy into real runtime processes."""

from __future__ import annotations

import pytest

from tests.support import Stack
from tests.test_rest_pipelines import assert_error

pytestmark = [pytest.mark.e2e, pytest.mark.both_stores]


def test_ingress_formats_and_query(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    r = stack.ingest(name, [{"id": 1, "name": "a"}, {"ID": 2}])
    assert r.status_code == 200, r.text
    assert r.json()["token"]
    ndjson = b'{"id": 3, "name": "c"}\n\n{"id": 4}\n'
    r = stack.rest.post(
        f"/v0/pipelines/{name}/ingress/T", params={"format": "json"}, content=ndjson
    )
    assert r.status_code == 200, r.text
    r = stack.ingest(
        name,
        [{"delete": {"id": 1, "name": "a"}}, {"insert": {"id": 5}}],
        update_format="insert_delete",
    )
    assert r.status_code == 200, r.text
    assert stack.ids(name) == [2, 3, 4, 5]
    rows = stack.query(name, "SELECT id, name FROM v WHERE id <= 3 ORDER BY id")
    assert rows == [{"id": 2, "name": None}, {"id": 3, "name": "c"}]
    assert stack.query(name, "SELECT * FROM t WHERE id > 100") == []
    token = r.json()["token"]
    r = stack.rest.get(f"/v0/pipelines/{name}/completion_status", params={"token": token})
    assert r.json() == {"status": "complete", "step": None}
    stack.force_stop(name)
    # The deployment that gave the token is gone: the token is refused.
    stack.start(name)
    r = stack.rest.get(f"/v0/pipelines/{name}/completion_status", params={"token": token})
    body = assert_error(r, 400, "InvalidCompletionToken")
    assert body["details"]["current_deployment_id"] == stack.get(name)["deployment_id"]
    stack.force_stop(name)


def test_a_bad_row_rejects_the_whole_request(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    assert stack.ingest(name, [{"id": 1}]).status_code == 200
    for rows, error in (
        ([{"id": 2}, {"idx": 3}], "unknown column 'idx'"),
        ([{"id": 2}, {"name": "no id"}], "NOT NULL"),
        ([{"id": 2}, [1, 2]], "JSON object"),
        ([{"id": 2}, {"id": {"nested": 1}}], "nested"),
    ):
        body = assert_error(stack.ingest(name, rows), 400, "InvalidIngressData")
        assert error in body["message"], body
    r = stack.rest.post(
        f"/v0/pipelines/{name}/ingress/t", params={"format": "json"}, content=b'{"id": 7}\n{"id": '
    )
    assert_error(r, 400, "InvalidIngressData")
    assert stack.ids(name) == [1]  # nothing of the refused requests
    assert_error(
        stack.ingest(name, [{"id": 1}], table="nope"), 404, "UnknownInputTable", {"table": "nope"}
    )
    assert_error(stack.ingest(name, [{"id": 1}], format="avro"), 400, "UnsupportedFormat")
    stack.force_stop(name)


def test_queries_are_read_only(stack: Stack, name: str) -> None:
    # But for INSERT ... VALUES (tests/test_adhoc_insert.py), as Feldera.
    stack.create(name)
    stack.start(name)
    stack.ingest(name, [{"id": 1}])
    for sql in (
        "DELETE FROM t",
        "UPDATE t SET id = 2",
        "INSERT INTO t SELECT * FROM t",
        "DROP TABLE t",
        "SELECT * FROM missing",
        "SELEC 1",
    ):
        r = stack.rest.get(f"/v0/pipelines/{name}/query", params={"sql": sql})
        assert_error(r, 400, "InvalidQuery")
    assert stack.ids(name) == [1]
    r = stack.rest.get(f"/v0/pipelines/{name}/query", params={"sql": "SELECT 1", "format": "arrow"})
    assert_error(r, 400, "UnsupportedFormat")
    stack.force_stop(name)


def test_data_needs_a_running_pipeline(stack: Stack, name: str) -> None:
    stack.create(name)
    r = stack.ingest(name, [{"id": 1}])
    assert_error(r, 503, "PipelineInteractionNotDeployed")
    assert r.headers["retry-after"] == "5"
    assert_error(
        stack.rest.get(f"/v0/pipelines/{name}/query", params={"sql": "SELECT 1"}),
        503,
        "PipelineInteractionNotDeployed",
    )
    stack.start(name, initial="paused")
    body = assert_error(stack.ingest(name, [{"id": 1}]), 503, "PipelineUnavailable")
    assert "paused" in body["message"]
    assert stack.ingest(name, [{"id": 1}], force="true").status_code == 200
    assert stack.ids(name) == [1]  # queries work while paused
    stack.force_stop(name)
