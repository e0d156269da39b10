"""The installation's health, in the shape of Feldera's `GET /v0/cluster_healthz`.

Feldera's pipeline manager records a cluster monitor event now and then
(api, compiler and runner each Healthy or Unhealthy) and the endpoint answers
the latest one, with each service's `unchanged_since`: the oldest retained
event with the same conclusion. Stopcock's three parts live in one manager
process (the compiler is in-process, the runner spawns local runtime
processes), so each call checks them there and then; `unchanged_since` is
kept in memory, per manager process, which is what Feldera's retention bound
amounts to here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from stopcock.manager.domain.model import now_us

SERVICES = ("api", "compiler", "runner")


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    healthy: bool
    message: str
    unchanged_since: int  # microseconds since the epoch, as the records' timestamps
    checked_at: int


@dataclass(frozen=True, slots=True)
class ClusterHealth:
    api: ServiceHealth
    compiler: ServiceHealth
    runner: ServiceHealth

    @property
    def all_healthy(self) -> bool:
        return self.api.healthy and self.compiler.healthy and self.runner.healthy


class HealthHistory:
    """When each service last changed between healthy and unhealthy."""

    def __init__(self) -> None:
        self._since: dict[str, tuple[bool, int]] = {}
        # Two concurrent checks must not interleave their updates of _since.
        self._lock = asyncio.Lock()

    async def record(self, results: dict[str, tuple[bool, str]]) -> ClusterHealth:
        async with self._lock:
            at = now_us()
            services: dict[str, ServiceHealth] = {}
            for service in SERVICES:
                healthy, message = results[service]
                previous = self._since.get(service)
                if previous is None or previous[0] != healthy:
                    self._since[service] = (healthy, at)
                services[service] = ServiceHealth(healthy, message, self._since[service][1], at)
            return ClusterHealth(**services)
