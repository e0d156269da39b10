"""Size limits of the REST and gRPC faces, in one place (README: Limits).

Envoy's config and Lua filter (envoy/envoy.yaml, envoy/stopcock.lua) cannot
import this module and spell the same numbers; tests/test_limits.py checks
that they agree.

* A REST request body (a pipeline definition, an API key request) may be up
  to MAX_REQUEST_BODY_BYTES: a 64 MiB program with room for its JSON
  escaping and the rest of the definition. The Lua filter answers a larger
  one 413 PayloadTooLarge after reading (and dropping) it all, so that a
  client that sends its whole body before reading the answer gets the answer
  rather than a reset connection. Ingress bodies are left to the ingress
  path (they are meant to stream).
* The manager accepts gRPC messages up to MAX_MESSAGE_BYTES: every REST body
  under the limit, decoded (strings shrink on the way from JSON to protobuf;
  numbers in a Struct grow, and a body that grows past this is refused with
  413 too).
* A REST answer is held whole on its way through Envoy: the manager's gRPC
  answer by the transcoder, which turns it into JSON, and a list's JSON by
  the Lua filter, which unwraps it. Either may be up to
  MAX_RESPONSE_BODY_BYTES; past that the answer is 500 ResponseTooLarge.
  Envoy briefly needs several times that in memory (about 1.5 GB for a
  200 MB list).
"""

from __future__ import annotations

MIB = 1 << 20
MAX_REQUEST_BODY_BYTES = 80 * MIB
MAX_MESSAGE_BYTES = 96 * MIB
MAX_RESPONSE_BODY_BYTES = 256 * MIB
# Request metadata the manager accepts. Through Envoy a REST request's whole
# URL travels as x-envoy-original-path, and an ad-hoc query (an INSERT of
# 1,000 rows in Feldera's tests) is all in its URL: gRPC's default soft limit
# (8 KiB) refused those with RESOURCE_EXHAUSTED. Envoy's own limit on request
# headers (60 KiB) is the bound a client meets first.
MAX_METADATA_BYTES = 64 * 1024
