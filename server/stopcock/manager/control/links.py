"""RuntimeLinks: clients of runtimes whose actor runs on another replica.

User data calls (ingress, queries, checkpoints) may reach any replica. The
owner's actor holds a connected client; another replica on the same host
connects to the runtime itself, with the address from the record and the
secret from the runtime's spec in the shared data directory. These calls
carry no epoch: they relay a user's data, not an owner's command.
"""

from __future__ import annotations

import asyncio

from stopcock.manager.control.runner import LocalProcessRunner
from stopcock.manager.control.runtime_client import RuntimeClient
from stopcock.manager.domain.model import PipelineRecord


class RuntimeLinks:
    def __init__(self, runner: LocalProcessRunner) -> None:
        self._runner = runner
        self._clients: dict[str, tuple[str, RuntimeClient]] = {}  # id -> (location, client)

    async def client(self, rec: PipelineRecord) -> RuntimeClient | None:
        """A client of the pipeline's runtime, or None if it cannot be found here."""
        location = f"{rec.deployment_id}@{rec.deployment_location}"
        known = self._clients.get(rec.id)
        if known is not None and known[0] == location:
            return known[1]
        if known is not None:
            await known[1].close()
            del self._clients[rec.id]
        if not rec.deployment_location or rec.deployment_id is None:
            return None
        spec = await asyncio.to_thread(self._runner.spawned_spec, rec.id)
        if spec is None or spec.deployment_id != rec.deployment_id:
            return None  # not on this host (or already replaced)
        port = int(rec.deployment_location.rsplit(":", 1)[1])
        # Pings only while a relayed call is under way: an idle link costs nothing.
        client = RuntimeClient(port, rec.name, spec.runtime_token, pings="during_calls")
        self._clients[rec.id] = (location, client)
        return client

    async def close(self) -> None:
        for _, client in self._clients.values():
            await client.close()
        self._clients.clear()
