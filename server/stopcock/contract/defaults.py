"""runtime_config's defaults, where the manager (which fills them in) and the
runtime (which falls back on them for a record written before a key existed)
both need them."""

from __future__ import annotations

CHECKPOINT_INTERVAL_SECS = 60  # fault_tolerance.checkpoint_interval_secs
PROVISIONING_TIMEOUT_SECS = 20  # provisioning_timeout_secs
QUERY_TIMEOUT_SECS = 60  # query_timeout_secs: how long a query may run
