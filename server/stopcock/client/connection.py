"""Where the manager is and how to authenticate: shared by the sync and async clients.

Both default from the environment (STOPCOCK_ADDRESS, STOPCOCK_TOKEN) so that
a script, the CLI and a shell session agree without passing anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_ADDRESS = "127.0.0.1:50051"
ADDRESS_ENV = "STOPCOCK_ADDRESS"
TOKEN_ENV = "STOPCOCK_TOKEN"
CALL_TIMEOUT = 30.0  # seconds: unary calls answer at once; this only bounds a wedged server

Metadata = tuple[tuple[str, str], ...]
# gRPC's default receive limit (4 MiB) is far below what the manager sends
# (a pipeline may hold a 64 MiB program; see stopcock.limits): the client
# takes whatever its manager answers.
CHANNEL_OPTIONS = (("grpc.max_receive_message_length", -1),)


@dataclass(frozen=True)
class Connection:
    """The resolved address and credential of a client."""

    address: str
    token: str | None

    @classmethod
    def resolve(cls, address: str | None, token: str | None) -> Connection:
        """Explicit values win; empty ones count as unset."""
        return cls(
            address=address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS,
            token=token or os.environ.get(TOKEN_ENV) or None,
        )

    @property
    def metadata(self) -> Metadata:
        """Sent with every call: the bearer credential, when there is one."""
        if self.token is None:
            return ()
        return (("authorization", f"Bearer {self.token}"),)
