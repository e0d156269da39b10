#!/usr/bin/env bash
# Regenerates everything that lives in generated/ into the directory $1:
# Python messages, gRPC stubs, their type stubs (mypy-protobuf), the
# descriptor set Envoy's gRPC-JSON transcoder loads (with source info: the
# proto's comments, which the OpenAPI document reuses), and the OpenAPI
# document of the REST face (tools/openapi.py, served as /v0/openapi.json).
set -euo pipefail
out=${1:?usage: tools/generate.sh OUTPUT_DIR}
venv_bin="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin"
protos=(proto/stopcock/v1/pipeline_service.proto proto/stopcock/internal/v1/runtime_service.proto)
mkdir -p "$out"
PATH="$venv_bin:$PATH" "$venv_bin/python" -m grpc_tools.protoc -I proto \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out=quiet:"$out" --mypy_grpc_out=quiet:"$out" \
  "${protos[@]}"
"$venv_bin/python" -m grpc_tools.protoc -I proto --include_imports --include_source_info \
  --descriptor_set_out="$out/stopcock_descriptor.pb" proto/stopcock/v1/pipeline_service.proto
"$venv_bin/python" "$(dirname "$0")/openapi.py" "$out/stopcock_descriptor.pb" "$out/openapi.json"
