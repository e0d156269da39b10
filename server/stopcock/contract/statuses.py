"""Every status name of the contract, defined once (docs/contract.md).

StrEnum members are the strings themselves ("Stopped" == Resources.STOPPED),
so records, JSON and protobuf carry them unchanged.
"""

from __future__ import annotations

from enum import StrEnum


class Resources(StrEnum):
    """deployment_resources_status (and, but for the transients, its desired)."""

    STOPPED = "Stopped"
    PROVISIONING = "Provisioning"
    PROVISIONED = "Provisioned"
    STOPPING = "Stopping"


class Runtime(StrEnum):
    """deployment_runtime_status; its desired is one of PAUSED, RUNNING, SUSPENDED."""

    UNAVAILABLE = "Unavailable"  # the manager cannot reach the runtime
    INITIALIZING = "Initializing"
    PAUSED = "Paused"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    # Restored a checkpoint of another program: bootstrapping the change
    # (Feldera's names); AwaitingApproval while bootstrap_policy
    # await_approval waits for POST /approve.
    BOOTSTRAPPING = "Bootstrapping"
    AWAITING_APPROVAL = "AwaitingApproval"
    # Reported by a runtime that cannot go on (the manager stops it with the
    # error); never shown as a pipeline's status.
    FAILED = "Failed"


class Storage(StrEnum):
    CLEARED = "Cleared"
    IN_USE = "InUse"
    CLEARING = "Clearing"


class Program(StrEnum):
    PENDING = "Pending"
    COMPILING_SQL = "CompilingSql"
    SQL_COMPILED = "SqlCompiled"
    COMPILING_RUST = "CompilingRust"
    SUCCESS = "Success"
    SQL_ERROR = "SqlError"
    RUST_ERROR = "RustError"
    SYSTEM_ERROR = "SystemError"


PROGRAM_ERRORS = frozenset({Program.SQL_ERROR, Program.RUST_ERROR, Program.SYSTEM_ERROR})
RUNTIME_DESIRABLE = (Runtime.RUNNING, Runtime.PAUSED, Runtime.SUSPENDED)
