"""Validation of what users send: names, descriptions, configurations.

Everything here is pure and raises `ApiError`s in the contract's shape, so
bad input is refused before anything is written.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from stopcock.contract import defaults
from stopcock.manager.domain import config_types, errors
from stopcock.manager.domain.model import JsonObject, PipelineRecord

NAME_PATTERN = r"^([A-Za-z0-9][-A-Za-z0-9_]*)?[A-Za-z0-9]$"
NAME_PATTERN_DESCRIPTION = (
    "letters, digits, '-' and '_', starting and ending with a letter or a digit"
)
NAME_MAX_BYTES = 63
DESCRIPTION_MAX_CHARS = 300
# Feldera's tag rules (pipeline-manager db/types/utils.rs, PATTERN_VALID_TAG and
# validate_tags): a closed character set, so a comma, for one, is refused.
TAG_PATTERN = r"^[a-zA-Z0-9 ._/|\\:=-]+$"
TAG_MAX_CHARS = 50
TAGS_MAX = 50
_TAG_RE = re.compile(TAG_PATTERN)
_NAME_RE = re.compile(NAME_PATTERN)

FT_MODELS = ("none", "at_least_once", "exactly_once")
DEFAULT_CHECKPOINT_INTERVAL = defaults.CHECKPOINT_INTERVAL_SECS
DEFAULT_PROVISIONING_TIMEOUT = defaults.PROVISIONING_TIMEOUT_SECS
DEFAULT_QUERY_TIMEOUT = defaults.QUERY_TIMEOUT_SECS
# Feldera's ResourceConfig: every limit unset by default.
RESOURCE_DEFAULTS: JsonObject = dict.fromkeys(
    (
        "cpu_cores_min",
        "cpu_cores_max",
        "memory_mb_min",
        "memory_mb_max",
        "storage_mb_max",
        "storage_class",
        "service_account_name",
        "namespace",
    )
)


@dataclass(frozen=True, slots=True)
class Definition:
    """A validated, normalized pipeline definition."""

    name: str
    description: str
    runtime_config: JsonObject
    program_code: str
    udf_rust: str
    udf_toml: str
    program_config: JsonObject
    tags: tuple[str, ...]


def validate_name(name: str) -> str:
    if not name:
        raise errors.bad_request("EmptyName", "Name cannot be empty")
    length = len(name.encode())
    if length > NAME_MAX_BYTES:
        raise errors.bad_request(
            "TooLongName",
            f"Name is {length} bytes long, more than the maximum of {NAME_MAX_BYTES}",
            {"name": name, "length": length, "maximum": NAME_MAX_BYTES},
        )
    if not _NAME_RE.match(name):
        raise errors.bad_request(
            "NameDoesNotMatchPattern",
            f"Name '{name}' does not match pattern {NAME_PATTERN}: it may contain only "
            f"{NAME_PATTERN_DESCRIPTION}",
            {
                "name": name,
                "pattern": NAME_PATTERN,
                "pattern_description": NAME_PATTERN_DESCRIPTION,
            },
        )
    return name


def _invalid_config(field: str, value: Any, kind: str, error: str) -> errors.ApiError:
    """Feldera's InvalidRuntimeConfig / InvalidProgramConfig: `details.error` is its
    ValidationError serialized by serde ({"DeserializationFailed": "..."}), and the
    message shows the JSON as sent, pretty-printed, then the reason."""
    reason = {
        "DeserializationFailed": "could not deserialize due to",
        "InvalidPipelineEnv": "invalid pipeline environment",
    }[kind]
    code = "InvalidRuntimeConfig" if field == "runtime_config" else "InvalidProgramConfig"
    return errors.bad_request(
        code,
        f"JSON for '{field}' field:\n{json.dumps(value, indent=2, ensure_ascii=False)}\n\n"
        f"... is not valid due to: {reason}: {error}",
        {"value": value, "error": {kind: error}},
    )


def _invalid_runtime(
    value: Any, error: str, kind: str = "DeserializationFailed"
) -> errors.ApiError:
    return _invalid_config("runtime_config", value, kind, error)


def validate_tags(tags: list[str]) -> None:
    """Feldera's validate_tags: at most 50 tags; each non-empty, at most 50 characters,
    of the allowed characters; the first rule a tag breaks names the refusal."""
    if len(tags) > TAGS_MAX:
        raise errors.bad_request(
            "TooManyTags",
            f"Pipeline has more tags ({len(tags)}) than the maximum allowed ({TAGS_MAX})",
            {"count": len(tags), "maximum": TAGS_MAX},
        )
    for tag in tags:
        if not tag:
            reason = "it cannot be empty"
        elif len(tag) > TAG_MAX_CHARS:
            reason = f"it is {len(tag)} characters long, but the maximum is {TAG_MAX_CHARS}"
        elif not _TAG_RE.fullmatch(tag):
            # fullmatch: Python's `$` would also match before a final newline; Rust's not.
            reason = (
                "it may contain only ASCII letters (a-z, A-Z), numbers (0-9), or one of space, "
                "'.', '_', '/', '|', '\\', ':', '=' and '-'"
            )
        else:
            continue
        raise errors.bad_request(
            "InvalidTag", f"Tag '{tag}' is invalid: {reason}", {"tag": tag, "reason": reason}
        )


def _as_int(value: Any, what: str, raw: JsonObject) -> int:
    # Struct carries every number as a double: accept 20.0, refuse 20.5.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid_runtime(raw, f"{what} must be an integer")
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise _invalid_runtime(raw, f"{what} must be an integer")
    return int(value)


_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|sec|secs|m|min|mins|h|hr|d)\s*")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "d": 86400.0,
}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "1s", "500ms" or "1m 30s" (the SDK's spelling)."""
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"not a duration: {text!r} (use e.g. '30s', '500ms', '1m 30s')")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text.strip():
        raise ValueError("empty duration")
    return total


def _duration_secs(cfg: JsonObject, key: str, original: JsonObject, what: str) -> int | None:
    """Whole seconds (rounded up) of the duration string at `key`, if present."""
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid_runtime(original, f"{what} must be a duration string such as '30s'")
    try:
        return max(1, math.ceil(parse_duration(value)))
    except ValueError as exc:
        raise _invalid_runtime(original, f"{what}: {exc}") from None


def _seconds(cfg: JsonObject, key: str, default: int, original: JsonObject, what: str) -> int:
    """A setting in whole seconds: newer Feldera clients send `key` as a duration
    string ("30s"), older ones `key_secs` as a number; absent or null is `default`."""
    from_duration = _duration_secs(cfg, key, original, key)
    if from_duration is not None:
        return from_duration
    value = cfg.get(f"{key}_secs")
    return default if value is None else _as_int(value, what, original)


def _fault_tolerance(raw: Any, original: JsonObject) -> JsonObject:
    ft = raw
    if ft is None:
        ft = {}
    elif ft in config_types.LEGACY_FT_STRINGS:
        # Feldera reads the legacy strings as its default model.
        ft = {"model": "exactly_once"}
    if not isinstance(ft, dict):
        raise _invalid_runtime(original, "fault_tolerance must be an object")
    result: JsonObject = dict(ft)
    model = result.get("model", "none")
    if model is None:
        model = "none"
    if model not in FT_MODELS:
        raise _invalid_runtime(
            original, f"fault_tolerance.model must be one of {', '.join(FT_MODELS)}"
        )
    result["model"] = model
    interval = _seconds(
        result,
        "checkpoint_interval",
        DEFAULT_CHECKPOINT_INTERVAL,
        original,
        "fault_tolerance.checkpoint_interval_secs",
    )
    result["checkpoint_interval_secs"] = min(max(interval, 1), 3600)
    return result


def normalize_runtime_config(raw: JsonObject | None) -> JsonObject:
    """Fills defaults and checks the keys Stopcock acts on; keeps the rest."""
    cfg: JsonObject = dict(raw or {})
    original = dict(cfg)
    # Feldera's types first (what it refuses, with its message), then Stopcock's own rules.
    type_error = config_types.RUNTIME_CONFIG(cfg)
    if type_error is not None:
        raise _invalid_runtime(original, type_error)
    env_error = config_types.reserved_env_error(cfg.get("env") or {})
    if env_error is not None:
        raise _invalid_runtime(original, env_error, "InvalidPipelineEnv")

    storage = cfg.get("storage", {})
    if storage is True:
        storage = {}
    elif storage is False:
        storage = None
    elif storage is not None and not isinstance(storage, dict):
        raise _invalid_runtime(original, "storage must be an object, null or a boolean")
    cfg["storage"] = storage

    cfg["fault_tolerance"] = _fault_tolerance(cfg.get("fault_tolerance"), original)

    timeout = _seconds(
        cfg,
        "provisioning_timeout",
        DEFAULT_PROVISIONING_TIMEOUT,
        original,
        "provisioning_timeout_secs",
    )
    if timeout < 1:
        raise _invalid_runtime(original, "provisioning_timeout_secs must be at least 1")
    cfg["provisioning_timeout_secs"] = timeout

    query_timeout = _seconds(
        cfg, "query_timeout", DEFAULT_QUERY_TIMEOUT, original, "query_timeout_secs"
    )
    if query_timeout < 1:
        raise _invalid_runtime(original, "query_timeout_secs must be at least 1")
    cfg["query_timeout_secs"] = query_timeout

    workers = cfg.get("workers", 1)
    workers = _as_int(1 if workers is None else workers, "workers", original)
    if workers < 1:
        raise _invalid_runtime(original, "workers must be at least 1")
    cfg["workers"] = workers
    # Feldera's RuntimeConfig serializes every field with its default, and its
    # clients read some of them (e.g. `resources.storage_mb_max`, `hosts`).
    # Stopcock runs one host and does not limit resources: the values are kept,
    # compared by the edit rules, and otherwise not acted on.
    hosts = cfg.get("hosts", 1)
    cfg["hosts"] = _as_int(1 if hosts is None else hosts, "hosts", original)
    resources = cfg.get("resources")
    cfg["resources"] = {**RESOURCE_DEFAULTS, **(resources if isinstance(resources, dict) else {})}
    return cfg


def normalize_program_config(raw: JsonObject | None) -> JsonObject:
    cfg: JsonObject = dict(raw or {})
    type_error = config_types.PROGRAM_CONFIG(cfg)
    if type_error is not None:
        raise _invalid_config("program_config", dict(cfg), "DeserializationFailed", type_error)
    cfg.setdefault("profile", "optimized")
    cfg.setdefault("cache", True)
    cfg.setdefault("runtime_version", None)
    return cfg


def validate_description(description: str) -> str:
    if len(description) > DESCRIPTION_MAX_CHARS:
        raise errors.bad_request(
            "InvalidDescription",
            f"Description is {len(description)} characters long, more than the maximum "
            f"of {DESCRIPTION_MAX_CHARS}",
            {"length": len(description), "maximum": DESCRIPTION_MAX_CHARS},
        )
    return description


def stored_definition(rec: PipelineRecord) -> Definition:
    """The definition a stored pipeline holds (valid: it was validated when written)."""
    return Definition(
        name=rec.name,
        description=rec.description,
        runtime_config=rec.runtime_config,
        program_code=rec.program_code,
        udf_rust=rec.udf_rust,
        udf_toml=rec.udf_toml,
        program_config=rec.program_config,
        tags=rec.tags,
    )


def patch_definition(current: Definition, patch: JsonObject) -> Definition:
    """A PATCH (Feldera's PatchPipeline): each field present in `patch` replaces
    the current one and is validated as in a create; absent fields keep their
    already valid values, so a value stored under older rules stays patchable.
    Validation runs in the create's order (name, description, tags, configs)."""
    if "tags" in patch:
        tags = patch["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise errors.bad_request(
                "InvalidRequest",
                "Json deserialize error: `tags` must be an array of strings",
                None,
            )
    if "name" in patch:
        validate_name(patch["name"])
    if "description" in patch:
        validate_description(patch["description"])
    if "tags" in patch:
        validate_tags(patch["tags"])
    return Definition(
        name=patch.get("name", current.name),
        description=patch.get("description", current.description),
        runtime_config=(
            normalize_runtime_config(patch["runtime_config"])
            if "runtime_config" in patch
            else current.runtime_config
        ),
        program_code=patch.get("program_code", current.program_code),
        udf_rust=patch.get("udf_rust", current.udf_rust),
        udf_toml=patch.get("udf_toml", current.udf_toml),
        program_config=(
            normalize_program_config(patch["program_config"])
            if "program_config" in patch
            else current.program_config
        ),
        tags=tuple(patch["tags"]) if "tags" in patch else current.tags,
    )


def validate_definition(
    *,
    name: str,
    description: str,
    runtime_config: JsonObject | None,
    program_code: str | None,
    udf_rust: str,
    udf_toml: str,
    program_config: JsonObject | None,
    tags: list[str],
) -> Definition:
    """Checks a create/replace body in Feldera's order: the body's own shape, the
    name, the description, the tags, runtime_config, program_config."""
    if program_code is None:
        # Feldera's PostPutPipeline has `program_code: String`: actix's JSON extractor
        # refuses a body without it before anything else is looked at.
        raise errors.bad_request(
            "InvalidRequest", "Json deserialize error: missing field `program_code`", None
        )
    validate_name(name)
    validate_description(description)
    validate_tags(tags)
    return Definition(
        name=name,
        description=description,
        runtime_config=normalize_runtime_config(runtime_config),
        program_code=program_code,
        udf_rust=udf_rust,
        udf_toml=udf_toml,
        program_config=normalize_program_config(program_config),
        tags=tuple(tags),
    )
