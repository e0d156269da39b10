"""The types Feldera gives `runtime_config` and `program_config`, checked as serde would.

Feldera's pipeline-manager (0.337.0) deserializes both objects into typed Rust
structs (`feldera_types::config::RuntimeConfig`, `db::types::program::ProgramConfig`)
with `serde_json::from_value`; a value of the wrong type is a 400 whose error text is
serde's. This module walks the same field list and returns serde's message for the
first mismatch, so a client sees the refusal Feldera would give, not a later one.

Like Feldera's structs (none denies unknown fields), unknown keys are accepted and
kept: Stopcock's own keys (`query_timeout_secs`, duration strings such as
`provisioning_timeout`) live among them. Numbers arrive through protobuf's Struct as
doubles, so an integral double stands for the integer JSON number it was.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

# A checker returns serde's error message, or None when the value deserializes.
Checker = Callable[[Any], str | None]

_UNSIGNED_MAX = {"u16": 2**16 - 1, "u64": 2**64 - 1, "usize": 2**64 - 1}


def _unexpected(value: Any) -> str:
    """serde's `Unexpected` for a JSON value, as `invalid type: {this}, expected ...` shows it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int | float):
        if isinstance(value, float) and not value.is_integer():
            return f"floating point `{value!r}`"
        return f"integer `{int(value)}`"
    if isinstance(value, str):
        return f"string {json.dumps(value, ensure_ascii=False)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


def _invalid_type(value: Any, expected: str) -> str:
    return f"invalid type: {_unexpected(value)}, expected {expected}"


def unsigned(kind: str) -> Checker:
    """Rust's u16 / u64 / usize: a non-negative integer in range; null is refused."""

    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _invalid_type(value, kind)
        if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
            return _invalid_type(value, kind)
        if value < 0 or value > _UNSIGNED_MAX[kind]:
            return f"invalid value: {_unexpected(value)}, expected {kind}"
        return None

    return check


def f64(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _invalid_type(value, "f64")
    return None


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else _invalid_type(value, "a boolean")


def string(value: Any) -> str | None:
    return None if isinstance(value, str) else _invalid_type(value, "a string")


def any_json(value: Any) -> str | None:
    return None


def optional(inner: Checker) -> Checker:
    """Rust's Option<T>: null is None, anything else must be a T."""
    return lambda value: None if value is None else inner(value)


def sequence(item: Checker) -> Checker:
    def check(value: Any) -> str | None:
        if not isinstance(value, list):
            return _invalid_type(value, "a sequence")
        for element in value:
            error = item(element)
            if error is not None:
                return error
        return None

    return check


def string_map(value: Any) -> str | None:
    """BTreeMap<String, String>."""
    if not isinstance(value, dict):
        return _invalid_type(value, "a map")
    for element in value.values():
        if not isinstance(element, str):
            return _invalid_type(element, "a string")
    return None


def unit_enum(variants: tuple[str, ...]) -> Checker:
    """A snake_case enum of unit variants, which serde reads from a string."""

    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            # serde_json reads an enum from a string or a one-key map.
            return _invalid_type(value, "string or map")
        if value not in variants:
            listed = ", ".join(f"`{v}`" for v in variants)
            return f"unknown variant `{value}`, expected one of {listed}"
        return None

    return check


def struct(name: str, fields: dict[str, Checker], required: tuple[str, ...] = ()) -> Checker:
    """A struct: a JSON object whose known fields have their types; unknown keys pass."""

    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return _invalid_type(value, f"struct {name}")
        for key in required:
            if key not in value:
                return f"missing field `{key}`"
        for key, checker in fields.items():
            if key in value:
                error = checker(value[key])
                if error is not None:
                    return error
        return None

    return check


def _storage(value: Any) -> str | None:
    # deserialize_storage_options: a boolean (false is no storage), null, or an object.
    if value is None or isinstance(value, bool):
        return None
    if not isinstance(value, dict):
        return _invalid_type(value, "boolean or StorageOptions")
    return _STORAGE_OPTIONS(value)


def _storage_backend(value: Any) -> str | None:
    # StorageBackendConfig is adjacently tagged: {"name": ..., "config": ...}.
    if not isinstance(value, dict):
        return _invalid_type(value, "adjacently tagged enum StorageBackendConfig")
    if "name" not in value:
        return "missing field `name`"
    return unit_enum(("default", "file", "object"))(value["name"])


_STORAGE_OPTIONS = struct(
    "StorageOptions",
    {
        "backend": _storage_backend,
        "min_storage_bytes": optional(unsigned("usize")),
        "min_step_storage_bytes": optional(unsigned("usize")),
        "compression": unit_enum(("default", "none", "snappy")),
        "cache_mib": optional(unsigned("usize")),
    },
)

_FT_EXPECTING = "none or FtConfig or 'initial_state' or 'latest_checkpoint'"


def _ft_model(value: Any) -> str | None:
    # none_as_string: null or "none" (any case) is no fault tolerance.
    if value is None:
        return None
    if not isinstance(value, str):
        return _invalid_type(value, "string")
    if value.lower() == "none":
        return None
    return unit_enum(("at_least_once", "exactly_once"))(value)


_FT_CONFIG = struct(
    "FtConfig",
    {"model": _ft_model, "checkpoint_interval_secs": optional(unsigned("u64"))},
)


def _fault_tolerance(value: Any) -> str | None:
    # deserialize_fault_tolerance: null, an object, or the legacy strings.
    if value is None:
        return None
    if isinstance(value, str):
        if value in LEGACY_FT_STRINGS:
            return None
        return f"invalid value: {_unexpected(value)}, expected {_FT_EXPECTING}"
    if not isinstance(value, dict):
        return _invalid_type(value, _FT_EXPECTING)
    return _FT_CONFIG(value)


# The strings older clients send for fault_tolerance; Feldera reads both as exactly_once.
LEGACY_FT_STRINGS = ("initial_state", "latest_checkpoint")

_TZ_OFFSET = re.compile(r"^[+-](\d{2}):?(\d{2})(?::?(\d{2}))?$")


def _clock_timezone_offset(value: Any) -> str | None:
    # ClockTimezoneOffset parses a UTC offset string such as "+05:30" (chrono's FixedOffset).
    if value is None:
        return None
    if not isinstance(value, str):
        return _invalid_type(value, "a string")
    match = _TZ_OFFSET.match(value)
    if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        return (
            f"invalid timezone offset {json.dumps(value)} (expected a UTC offset such as "
            '"+05:30" or "-08:00"): input contains invalid characters'
        )
    return None


_RESOURCES = struct(
    "ResourceConfig",
    {
        "cpu_cores_min": optional(f64),
        "cpu_cores_max": optional(f64),
        "memory_mb_min": optional(unsigned("u64")),
        "memory_mb_max": optional(unsigned("u64")),
        "storage_mb_max": optional(unsigned("u64")),
        "storage_class": optional(string),
        "service_account_name": optional(string),
        "namespace": optional(string),
    },
)

RUNTIME_CONFIG = struct(
    "RuntimeConfig",
    {
        "workers": unsigned("u16"),
        "max_rss_mb": optional(unsigned("u64")),
        "datafusion_memory_mb": optional(unsigned("u64")),
        "hosts": unsigned("usize"),
        "storage": _storage,
        "fault_tolerance": _fault_tolerance,
        "cpu_profiler": boolean,
        "tracing": boolean,
        "tracing_endpoint_jaeger": string,
        "min_batch_size_records": unsigned("u64"),
        "max_buffering_delay_usecs": unsigned("u64"),
        "resources": _RESOURCES,
        "clock_resolution_usecs": optional(unsigned("u64")),
        "clock_timezone_offset": _clock_timezone_offset,
        "pin_cpus": sequence(unsigned("usize")),
        "provisioning_timeout_secs": optional(unsigned("u64")),
        "max_parallel_connector_init": optional(unsigned("u64")),
        "init_containers": any_json,
        "checkpoint_during_suspend": boolean,
        "http_workers": optional(unsigned("u64")),
        "io_workers": optional(unsigned("u64")),
        "env": string_map,
        # DevTweaks: an object; its many tuning knobs are the runtime's business.
        "dev_tweaks": struct("DevTweaks", {}),
        "logging": optional(string),
        "pipeline_template_configmap": optional(
            struct("PipelineTemplateConfig", {"name": string, "key": string}, required=("name",))
        ),
    },
)

PROFILES = ("dev", "unoptimized", "optimized", "optimized_symbols")

PROGRAM_CONFIG = struct(
    "ProgramConfig",
    {
        "profile": optional(unit_enum(PROFILES)),
        "cache": boolean,
        "runtime_version": optional(string),
        "use_platform_compiler": boolean,
    },
)

# Environment variables a pipeline may not set (Feldera's pipeline_env.rs): the
# runtime's own settings.
ENV_VAR_BLOCKLIST = ("HOSTNAME", "RUST_LOG", "TOKIO_WORKER_THREADS")
ENV_VAR_PREFIX_BLOCKLIST = ("FELDERA_", "KUBERNETES_", "TOKIO_")


def reserved_env_error(env: dict[str, str]) -> str | None:
    """Feldera's message for env keys that are reserved, or None."""
    # Sorted: Feldera's env is a BTreeMap, which lists its keys in order.
    forbidden = [
        key
        for key in sorted(env)
        if key in ENV_VAR_BLOCKLIST or key.startswith(ENV_VAR_PREFIX_BLOCKLIST)
    ]
    if not forbidden:
        return None
    return (
        "the following environment variable(s) are reserved and cannot be overridden: "
        + ", ".join(forbidden)
    )
