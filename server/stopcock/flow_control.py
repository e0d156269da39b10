"""HTTP/2 flow control for the data path (Envoy -> manager -> runtime).

Ingress bodies stream through the manager and the runtime in ~1 MiB
messages. Each hop buffers at most what its receive window lets the sender
push ahead of the reader. gRPC's default grows that window with its
bandwidth-delay probe, which on loopback can reach hundreds of MB: a
manager whose reader lags (the runtime is slower than Envoy) then holds that
much of a body. A fixed window bounds every hop's buffer; 8 MiB keeps
several messages in flight, so throughput does not suffer.
"""

from __future__ import annotations

WINDOW_BYTES = 8 << 20

OPTIONS: list[tuple[str, int]] = [
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", WINDOW_BYTES),
]
