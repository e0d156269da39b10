"""Ingress bodies of any size: streamed in chunks, atomic, bounded in memory.

Through Envoy, with real runtime processes. Envoy's transcoder sends a
request body as ~1 MiB messages of the client-streaming IngestRows; the
manager relays them; the runtime checks each as it arrives and applies the
whole body in one transaction once it has all arrived.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Stack, running_stack, wait_until
from tests.test_checkpoints import checkpoint, rows
from tests.test_rest_pipelines import assert_error

pytestmark = pytest.mark.e2e

MIB = 1 << 20


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def ndjson(start: int, count: int, width: int = 100) -> bytes:
    pad = "x" * width
    return b"".join(
        json.dumps({"id": i, "name": f"{pad}{i}"}).encode() + b"\n"
        for i in range(start, start + count)
    )


def count(stack: Stack, name: str) -> int:
    (row,) = stack.query(name, "SELECT count(*) AS n FROM t")
    n: int = row["n"]
    return n


def post_body(
    stack: Stack, name: str, body: bytes | Iterator[bytes], **params: str
) -> httpx.Response:
    return stack.rest.post(
        f"/v0/pipelines/{name}/ingress/t",
        params={"format": "json", **params},
        content=body,
        timeout=600,
    )


def test_a_1_gib_body_is_ingested_with_bounded_memory(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        name = "big"
        stack.create(name)
        stack.start(name)
        (runtime,) = stack.runtime_pids(name)
        assert stack.manager is not None
        block = ndjson(0, 1000, width=1000)  # ~1 MB of rows, sent 1,024 times
        repeats = 1024

        def body() -> Iterator[bytes]:
            for _ in range(repeats):
                yield block

        r = post_body(stack, name, body())
        assert r.status_code == 200, r.text
        assert count(stack, name) == 1000 * repeats
        # Neither the runtime nor the manager ever held the body (~1 GiB).
        assert peak_rss_mib(runtime) <= 256, peak_rss_mib(runtime)
        assert peak_rss_mib(stack.manager.pid) <= 256, peak_rss_mib(stack.manager.pid)


def test_one_bad_row_at_the_end_of_a_long_body_changes_nothing(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    assert stack.ingest(name, rows(0, 5)).status_code == 200
    good = ndjson(5, 40_000)  # ~5 MB: several chunks
    r = post_body(stack, name, good + b'{"id": 1, "nope": 2}\n')
    body = assert_error(r, 400, "InvalidIngressData")
    assert body["details"]["update_index"] == 40_000
    assert count(stack, name) == 5
    # Malformed JSON in the middle of a long array body: also nothing.
    r = post_body(stack, name, b"[" + b"{}," * 3_000_000 + b"{oops}]", array="true")
    assert_error(r, 400, "InvalidIngressData")
    assert count(stack, name) == 5
    stack.force_stop(name)


def test_a_long_array_body_is_cut_at_the_right_places(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    # Strings holding the very bytes a cut looks for ("}," and "}, ").
    tricky = [{"id": i, "name": f'}},{{"id": {i}}}, }} ,{i}'} for i in range(150_000)]
    r = post_body(stack, name, json.dumps(tricky).encode(), array="true")
    assert r.status_code == 200, r.text
    got = stack.query(name, "SELECT id, name FROM t ORDER BY id")
    assert got == tricky
    stack.force_stop(name)


def test_a_slow_body_holds_nothing_and_a_suspend_cuts_it_off(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    first_sent, release = threading.Event(), threading.Event()
    result: list[httpx.Response | Exception] = []

    def slow_body() -> Iterator[bytes]:
        yield ndjson(1000, 20_000)  # ~2.5 MB, then nothing for a while
        first_sent.set()
        release.wait(60)
        yield ndjson(21_000, 10)

    def send() -> None:
        try:
            result.append(post_body(stack, name, slow_body()))
        except httpx.HTTPError as exc:
            result.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    assert first_sent.wait(30)
    # While that body is arriving, other ingests and a checkpoint go through.
    assert stack.ingest(name, rows(0, 10)).status_code == 200
    checkpoint(stack, name)
    # A suspend does not wait for it: it is refused at once, and nothing of it lands.
    assert stack.post(name, "stop").status_code == 202
    assert stack.wait_status(name, "Stopped")["deployment_error"] is None
    release.set()
    sender.join(60)
    (outcome,) = result
    # Envoy answers the refusal as soon as the manager gives it, often while
    # the client is still sending; a client that reads it gets the 503.
    if isinstance(outcome, httpx.Response):
        assert_error(outcome, 503, "PipelineUnavailable")
    else:
        assert isinstance(outcome, httpx.TransportError), outcome
    stack.start(name)
    assert stack.ids(name) == list(range(10))
    stack.force_stop(name)


def test_an_empty_body_ingests_nothing(stack: Stack, name: str) -> None:
    stack.create(name)
    stack.start(name)
    r = post_body(stack, name, b"")
    assert r.status_code == 200, r.text
    wait_until(lambda: count(stack, name) == 0, "the count")
    stack.force_stop(name)
