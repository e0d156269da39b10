"""The internal RuntimeService's messages <-> the contract's plain values.

Shared by the runtime (which fills reports) and the manager (which reads
them), so that the mapping between the wire's enum and the contract's status
names, and the shape of a checkpoint, are written once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format, struct_pb2
from stopcock.contract.json_values import integral_as_int
from stopcock.contract.statuses import Runtime
from stopcock.internal.v1 import runtime_service_pb2 as pb

_TO_WIRE = {
    Runtime.INITIALIZING.value: pb.RUNTIME_STATE_INITIALIZING,
    Runtime.PAUSED.value: pb.RUNTIME_STATE_PAUSED,
    Runtime.RUNNING.value: pb.RUNTIME_STATE_RUNNING,
    Runtime.SUSPENDED.value: pb.RUNTIME_STATE_SUSPENDED,
    Runtime.FAILED.value: pb.RUNTIME_STATE_FAILED,
    Runtime.BOOTSTRAPPING.value: pb.RUNTIME_STATE_BOOTSTRAPPING,
    Runtime.AWAITING_APPROVAL.value: pb.RUNTIME_STATE_AWAITING_APPROVAL,
}
_FROM_WIRE: dict[int, str] = {int(wire): name for name, wire in _TO_WIRE.items()}
CHECKPOINT_FIELDS = tuple(f.name for f in pb.Checkpoint.DESCRIPTOR.fields)


def state(name: str) -> pb.RuntimeState.ValueType:
    """The wire's value of a runtime status name; ValueError for one it lacks."""
    try:
        return _TO_WIRE[name]
    except KeyError:
        raise ValueError(f"no runtime state '{name}'") from None


def state_name(value: int) -> str:
    """The contract's name of a wire state ('' for UNSPECIFIED or an unknown one)."""
    return _FROM_WIRE.get(int(value), "")


def struct(value: dict[str, Any] | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    message = struct_pb2.Struct()
    message.update(value)
    return message


def plain(message: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as JSON-like Python, integral numbers as ints (Struct keeps doubles)."""
    return integral_as_int(json_format.MessageToDict(message))  # type: ignore[no-any-return]


def checkpoints(entries: Iterable[dict[str, Any]]) -> list[pb.Checkpoint]:
    return [pb.Checkpoint(**{k: e[k] for k in CHECKPOINT_FIELDS if k in e}) for e in entries]


def checkpoint_dicts(messages: Iterable[pb.Checkpoint]) -> list[dict[str, Any]]:
    return [{k: getattr(m, k) for k in CHECKPOINT_FIELDS} for m in messages]
