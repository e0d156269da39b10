"""Owner epochs: what the manager and the runtime agree on to fence a stale owner.

With manager replicas, each pipeline is owned by one replica through a
lease whose epoch grows on every claim. The owner's calls to the runtime
carry that epoch in EPOCH_METADATA; the runtime remembers the highest it
has seen (EPOCH_FILE in its run directory) and refuses a lower one with
gRPC ABORTED and the error code STALE_OWNER (HTTP 409): it comes from a
replica that lost the pipeline and has not noticed yet.
"""

from __future__ import annotations

import re

EPOCH_METADATA = "x-stopcock-epoch"
EPOCH_FILE = "epoch"
STALE_OWNER = "StaleOwner"
STALE_OWNER_HTTP_STATUS = 409
# The lease's epoch is a PostgreSQL bigint: nothing above fits it.
MAX_EPOCH = 2**63 - 1

# ASCII digits only: str.isdigit() and int() also take other scripts' digits,
# signs, underscores and spaces, none of which a manager writes.
_DECIMAL = re.compile(r"[0-9]{1,19}")


def parse_epoch(text: str | bytes) -> int:
    """The epoch `text` spells (decimal, 0..MAX_EPOCH); ValueError if it spells none."""
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    if not _DECIMAL.fullmatch(text) or int(text) > MAX_EPOCH:
        raise ValueError(f"{EPOCH_METADATA} must be a decimal in 0..{MAX_EPOCH}, not {text!r}")
    return int(text)


def stale_message(epoch: int, highest: int) -> str:
    return (
        f"fenced: this runtime has seen owner epoch {highest}; "
        f"a command with epoch {epoch} comes from a stale owner"
    )
