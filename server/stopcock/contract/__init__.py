"""What the manager, the runtime and the client agree on: status names, the
error trailer's codec, the runtime spec. No I/O, no gRPC, no generated code."""
