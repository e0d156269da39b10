"""CSV ingress (`?format=csv`) by Feldera's rules, through Envoy and real runtimes.

Fields follow the table's column order; quoted fields hold commas, newlines
and doubled quotes; an empty non-string field or `NULL`/`null` is NULL. A
request is one transaction: a bad record anywhere rejects it with Feldera's
`ParseErrors` (event numbers, fields) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from feldera import FelderaClient
from feldera.rest.errors import FelderaAPIError

from tests.support import Stack, wait_until
from tests.test_rest_pipelines import assert_error

pytestmark = pytest.mark.e2e

TYPED = (
    "CREATE TABLE t (id INTEGER NOT NULL, name VARCHAR, ok BOOLEAN, score DOUBLE, "
    "day DATE, at TIMESTAMP, big BIGINT);"
)


def post_csv(
    stack: Stack, name: str, body: bytes | str | Iterator[bytes], **params: str
) -> httpx.Response:
    return stack.rest.post(
        f"/v0/pipelines/{name}/ingress/t",
        params={"format": "csv", **params},
        content=body.encode() if isinstance(body, str) else body,
        headers={"content-type": "text/csv"},
        timeout=300,
    )


def all_rows(stack: Stack, name: str) -> list[dict[str, Any]]:
    return stack.query(name, "SELECT * FROM t ORDER BY id")


@pytest.fixture
def typed(stack: Stack, name: str) -> Iterator[str]:
    stack.create(name, TYPED)
    stack.start(name)
    yield name
    stack.force_stop(name)


def test_rows_quotes_and_nulls_follow_felderas_rules(stack: Stack, typed: str) -> None:
    body = (
        "1,plain,true,1.5,2024-02-25,2024-02-25 12:12:33,9000000000\n"
        '2,"comma, ""quote"" and\nnewline",false,1e3,2024-2-5, 2024-02-25 12:12:33.123 ,\n'
        "3,,,,,,\n"  # empty: '' for a string, NULL otherwise
        "4,NULL,null,NaN,NULL,null,NULL\n"
        "5\n"  # missing fields are NULL
        "6,extra,true,0,2000-01-01,2000-01-01 00:00:00,1,ignored,fields\r\n"
        "\n"  # a blank line is skipped
        "7,last line without newline,false,-2,,,"
    )
    r = post_csv(stack, typed, body, update_format="insert_delete")  # ignored for CSV
    assert r.status_code == 200, r.text
    assert r.json()["token"]
    rows = {row["id"]: row for row in all_rows(stack, typed)}
    assert sorted(rows) == [1, 2, 3, 4, 5, 6, 7]
    assert rows[1]["name"] == "plain" and rows[1]["big"] == 9_000_000_000
    assert rows[1]["score"] == 1.5 and rows[1]["day"] == "2024-02-25"
    assert rows[2]["name"] == 'comma, "quote" and\nnewline'
    assert rows[2]["score"] == 1000.0
    assert rows[2]["day"] == "2024-02-05"  # normalized, as Feldera stores a DATE
    assert rows[2]["at"] == "2024-02-25 12:12:33.123"  # surrounding spaces trimmed
    assert rows[3]["name"] == "" and rows[3]["ok"] is None and rows[3]["big"] is None
    assert rows[4]["name"] is None and rows[4]["ok"] is None and rows[4]["day"] is None
    assert rows[5]["name"] is None and rows[5]["score"] is None
    assert rows[6]["name"] == "extra" and rows[6]["big"] == 1
    assert rows[7]["name"] == "last line without newline" and rows[7]["score"] == -2.0


def test_a_bad_record_rejects_the_whole_request(stack: Stack, typed: str) -> None:
    assert post_csv(stack, typed, "1,a\n").status_code == 200
    body = "2,b\nnot_a_number,c\n3,d,maybe\n4,e\n"
    body_json = assert_error(post_csv(stack, typed, body), 400, "ParseErrors")
    assert body_json["message"].startswith("Errors parsing input data (2 errors):")
    assert "Parse error (event #2)" in body_json["message"]
    details = body_json["details"]
    assert details["num_errors"] == 2
    first, second = details["errors"]
    assert (first["event_number"], first["field"]) == (2, "id")
    assert "invalid digit found in string" in first["description"]
    assert (second["event_number"], second["field"]) == (3, "ok")
    assert [row["id"] for row in all_rows(stack, typed)] == [1]  # nothing of 2..4
    # A NOT NULL column needs a value; a BIGINT one a number that fits.
    assert_error(post_csv(stack, typed, ",x\n"), 400, "ParseErrors")
    r = post_csv(stack, typed, "5,a,true,1,2024-01-01,2024-01-01 00:00:00,9223372036854775808\n")
    assert "too large" in assert_error(r, 400, "ParseErrors")["message"]
    # Many errors: all counted, the first few reported (the answer stays small).
    r = post_csv(stack, typed, "x\n" * 1000)
    body_json = assert_error(r, 400, "ParseErrors")
    assert body_json["details"]["num_errors"] == 1000
    assert body_json["message"].startswith("Errors parsing input data (reporting 5 out of 1000")
    assert [row["id"] for row in all_rows(stack, typed)] == [1]


def test_csv_is_the_default_format_and_unknown_ones_are_refused(stack: Stack, typed: str) -> None:
    # As Feldera: a request that names no format is CSV (the SDK always names one).
    r = stack.rest.post(f"/v0/pipelines/{typed}/ingress/t", content=b"1\n2,two\n")
    assert r.status_code == 200, r.text
    assert [(row["id"], row["name"]) for row in all_rows(stack, typed)] == [(1, None), (2, "two")]
    r = stack.rest.post(f"/v0/pipelines/{typed}/ingress/t", content=b'{"id": 3}\n')
    assert_error(r, 400, "ParseErrors")
    r = stack.rest.post(
        f"/v0/pipelines/{typed}/ingress/t", params={"format": "parquet"}, content=b"1\n"
    )
    assert_error(r, 400, "UnsupportedFormat")


def test_a_big_csv_body_is_streamed_and_atomic(stack: Stack, name: str) -> None:
    stack.create(name)  # t (id INTEGER NOT NULL, name TEXT)
    stack.start(name)
    count = 200_000
    # Quoted names with commas and newlines, cut across Envoy's ~1 MiB chunks.
    block = "".join(f'{i},"row, {i}\nsecond ""line"""\n' for i in range(count)).encode()

    def body(tail: bytes) -> Iterator[bytes]:
        for start in range(0, len(block), 65_537):  # odd sizes: cuts mid-record
            yield block[start : start + 65_537]
        yield tail

    r = post_csv(stack, name, body(b"oops,\n"))
    err = assert_error(r, 400, "ParseErrors")
    assert err["details"]["errors"][0]["event_number"] == count + 1
    assert stack.query(name, "SELECT count(*) AS n FROM t") == [{"n": 0}]
    r = post_csv(stack, name, body(b""))
    assert r.status_code == 200, r.text
    assert stack.query(name, "SELECT count(*) AS n FROM t") == [{"n": count}]
    (row,) = stack.query(name, "SELECT name FROM t WHERE id = 12345")
    assert row["name"] == 'row, 12345\nsecond "line"'
    stack.force_stop(name)


def test_the_feldera_sdk_pushes_csv(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    client = FelderaClient(f"http://127.0.0.1:{stack.rest_port}", timeout=30)
    client.push_to_pipeline(name, "t", "csv", '1,"a, b"\n2,\n', wait=True, wait_timeout_s=30)
    assert stack.query(name, "SELECT * FROM t ORDER BY id") == [
        {"id": 1, "name": "a, b"},
        {"id": 2, "name": ""},
    ]
    with pytest.raises(FelderaAPIError) as info:
        client.push_to_pipeline(name, "t", "csv", "3\nx\n")
    assert info.value.error_code == "ParseErrors"
    assert stack.ids(name) == [1, 2]
    stack.force_stop(name)


def test_refused_records_are_counted_in_connector_stats(stack: Stack, name: str) -> None:
    # Feldera's deployment_runtime_status_details.connector_stats.num_errors:
    # every bad record of every refused request (a JSON refusal names one).
    stack.create(name)
    stack.start(name)

    def num_errors() -> int:
        details = stack.get(name, "status")["deployment_runtime_status_details"] or {}
        found: int = details.get("connector_stats", {}).get("num_errors", -1)
        return found

    wait_until(lambda: num_errors() == 0, "connector_stats to be reported")
    assert post_csv(stack, name, "1\n2\n3\n").status_code == 200
    assert_error(post_csv(stack, name, "a\nb\nc\nd\n"), 400, "ParseErrors")
    assert post_csv(stack, name, "4\n5\n6\n").status_code == 200
    wait_until(lambda: num_errors() == 4, "4 errors to be counted")
    assert_error(stack.ingest(name, [{"id": "x", "nope": 1}]), 400, "InvalidIngressData")
    wait_until(lambda: num_errors() == 5, "5 errors to be counted")
    assert stack.ids(name) == [1, 2, 3, 4, 5, 6]
    # Feldera's selector=status_with_connectors shows them as `connectors`.
    assert stack.get(name, "status_with_connectors")["connectors"] == {"num_errors": 5}
    listed = stack.rest.get("/v0/pipelines", params={"selector": "status_with_connectors"})
    (mine,) = [p for p in listed.json() if p["name"] == name]
    assert mine["connectors"] == {"num_errors": 5}
    assert "connectors" not in stack.get(name, "status")
    assert "program_code" not in mine
    stack.force_stop(name)
