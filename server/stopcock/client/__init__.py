"""The Python client of Stopcock's gRPC API (stopcock.v1.PipelineService).

    from stopcock.client import Client, PipelineDefinition

    with Client() as client:  # $STOPCOCK_ADDRESS / $STOPCOCK_TOKEN, or arguments
        client.put(PipelineDefinition("orders", "CREATE TABLE orders (id INT);"))
        client.start("orders")
        client.wait_for("orders", "Running", timeout=60)
        client.stop("orders")
        stopped = client.wait_for("orders", "Stopped")

`AsyncClient` has the same methods, awaited. Failures raise `StopcockError`
(`error_code`, `http_status`, `message`, `details`), whose subclasses
`PipelineFailed`, `CheckpointFailed` and `WaitTimeout` end the waits.
"""

from stopcock.client.aio import AsyncClient
from stopcock.client.connection import DEFAULT_ADDRESS
from stopcock.client.definition import PipelineDefinition
from stopcock.client.errors import CheckpointFailed, PipelineFailed, StopcockError, WaitTimeout
from stopcock.client.models import (
    ApiKey,
    Checkpoint,
    CheckpointStatus,
    CreatedApiKey,
    Pipeline,
    PipelineChange,
    PutResult,
)
from stopcock.client.sync import Client

__all__ = [
    "DEFAULT_ADDRESS",
    "ApiKey",
    "AsyncClient",
    "Checkpoint",
    "CheckpointFailed",
    "CheckpointStatus",
    "Client",
    "CreatedApiKey",
    "Pipeline",
    "PipelineChange",
    "PipelineDefinition",
    "PipelineFailed",
    "PutResult",
    "StopcockError",
    "WaitTimeout",
]
