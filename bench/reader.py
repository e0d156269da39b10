"""`python -m bench.reader URL SQL`: reads one query's NDJSON answer, streaming.

The client of the bodies section's query (bench.bodies), in a process of its
own so that its peak memory is the reader's alone: the benchmark process
holds the baseline's in-memory copy of the table (~1 GB) at that moment.
It imports nothing but httpx, counts rows as bytes arrive (newlines) and
keeps no more than one chunk, and prints one JSON object: rows, bytes, time
to the first body byte and to the end (from just before the request is
sent), its own CPU seconds, and whether the body ended with a whole line.
"""

from __future__ import annotations

import json
import sys
import time

import httpx


def read(url: str, sql: str) -> dict[str, object]:
    rows = size = 0
    first: float | None = None
    last = b""
    with httpx.Client(timeout=httpx.Timeout(600.0, connect=10.0)) as client:
        cpu0, t0 = time.process_time(), time.perf_counter()
        with client.stream("GET", url, params={"sql": sql, "format": "json"}) as r:
            if r.status_code != 200:
                r.read()
                return {"error": f"{r.status_code} {r.text[:500]}"}
            for chunk in r.iter_raw():
                if not chunk:
                    continue
                if first is None:
                    first = time.perf_counter()
                rows += chunk.count(b"\n")
                size += len(chunk)
                last = chunk[-1:]
        end = time.perf_counter()
    return {
        "rows": rows,
        "bytes": size,
        "first_byte_s": (first or end) - t0,
        "seconds": end - t0,
        "cpu_s": time.process_time() - cpu0,
        "whole_lines": last in (b"", b"\n"),
    }


def main(argv: list[str]) -> int:
    url, sql = argv
    try:
        result = read(url, sql)
    except httpx.HTTPError as exc:  # e.g. the body cut short: a truncated answer
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
