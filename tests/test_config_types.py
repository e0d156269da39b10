"""Feldera's typed runtime_config / program_config, tags and env rules (pure).

The expected messages are serde's for `serde_json::from_value` into Feldera's
structs (feldera-types config.rs, pipeline-manager db/types/program.rs) and the
pipeline-manager's own texts (db/types/utils.rs, pipeline_env.rs).
"""

from __future__ import annotations

from typing import Any

import pytest
from stopcock.manager.domain import errors
from stopcock.manager.domain.definition import (
    normalize_program_config,
    normalize_runtime_config,
    validate_definition,
    validate_tags,
)


def _definition(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": "p",
        "description": "",
        "runtime_config": None,
        "program_code": "",
        "udf_rust": "",
        "udf_toml": "",
        "program_config": None,
        "tags": [],
    }
    return {**fields, **overrides}


def _refusal(raw: dict[str, Any]) -> errors.ApiError:
    with pytest.raises(errors.ApiError) as info:
        normalize_runtime_config(raw)
    return info.value


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (
            {"resources": {"storage_mb_max": "10GB"}},
            'invalid type: string "10GB", expected u64',
        ),
        ({"resources": {"storage_mb_max": -1}}, "invalid value: integer `-1`, expected u64"),
        ({"resources": {"memory_mb_max": 1.5}}, "invalid type: floating point `1.5`, expected u64"),
        ({"resources": {"cpu_cores_max": "2"}}, 'invalid type: string "2", expected f64'),
        ({"resources": {"namespace": 3}}, "invalid type: integer `3`, expected a string"),
        ({"resources": "big"}, 'invalid type: string "big", expected struct ResourceConfig'),
        ({"workers": "4"}, 'invalid type: string "4", expected u16'),
        ({"workers": None}, "invalid type: null, expected u16"),
        ({"workers": 70000}, "invalid value: integer `70000`, expected u16"),
        ({"hosts": True}, "invalid type: boolean `true`, expected usize"),
        ({"tracing": "yes"}, 'invalid type: string "yes", expected a boolean'),
        ({"cpu_profiler": 1}, "invalid type: integer `1`, expected a boolean"),
        ({"checkpoint_during_suspend": None}, "invalid type: null, expected a boolean"),
        ({"pin_cpus": [0, "1"]}, 'invalid type: string "1", expected usize'),
        ({"pin_cpus": 3}, "invalid type: integer `3`, expected a sequence"),
        ({"env": {"A": 1}}, "invalid type: integer `1`, expected a string"),
        ({"env": None}, "invalid type: null, expected a map"),
        ({"storage": "yes"}, 'invalid type: string "yes", expected boolean or StorageOptions'),
        (
            {"storage": {"compression": "zstd"}},
            "unknown variant `zstd`, expected one of `default`, `none`, `snappy`",
        ),
        (
            {"fault_tolerance": {"model": "sometimes"}},
            "unknown variant `sometimes`, expected one of `at_least_once`, `exactly_once`",
        ),
        (
            {"fault_tolerance": "always"},
            'invalid value: string "always", expected none or FtConfig or '
            "'initial_state' or 'latest_checkpoint'",
        ),
        (
            {"fault_tolerance": {"checkpoint_interval_secs": "60"}},
            'invalid type: string "60", expected u64',
        ),
        (
            {"clock_timezone_offset": "EST"},
            'invalid timezone offset "EST" (expected a UTC offset such as "+05:30" or '
            '"-08:00"): input contains invalid characters',
        ),
        ({"pipeline_template_configmap": {"key": "k"}}, "missing field `name`"),
        ({"dev_tweaks": None}, "invalid type: null, expected struct DevTweaks"),
        ({"logging": 3}, "invalid type: integer `3`, expected a string"),
    ],
)
def test_runtime_config_types(raw: dict[str, Any], error: str) -> None:
    refusal = _refusal(raw)
    assert (refusal.http_status, refusal.error_code) == (400, "InvalidRuntimeConfig")
    assert refusal.details == {"value": raw, "error": {"DeserializationFailed": error}}
    assert refusal.message.startswith("JSON for 'runtime_config' field:\n{\n")
    assert refusal.message.endswith(
        f"... is not valid due to: could not deserialize due to: {error}"
    )


def test_runtime_config_accepts_feldera_values_and_unknown_keys() -> None:
    raw: dict[str, Any] = {
        "workers": 8,
        "hosts": 1,
        "max_rss_mb": None,
        "storage": {"backend": {"name": "default"}, "compression": "snappy", "cache_mib": None},
        "fault_tolerance": {"model": "none", "checkpoint_interval_secs": None},
        "resources": {"cpu_cores_max": 2.5, "storage_mb_max": 1024, "storage_class": None},
        "clock_timezone_offset": "+05:30",
        "pin_cpus": [0, 1],
        "env": {"MY_VAR": "x"},
        "dev_tweaks": {"anything": True},
        "init_containers": [{"name": "x"}],
        "pipeline_template_configmap": {"name": "t"},
        "some_future_key": {"kept": 1},
    }
    cfg = normalize_runtime_config(raw)
    assert cfg["workers"] == 8 and cfg["some_future_key"] == {"kept": 1}
    assert cfg["fault_tolerance"]["model"] == "none"


@pytest.mark.parametrize("legacy", ["initial_state", "latest_checkpoint"])
def test_legacy_fault_tolerance_strings(legacy: str) -> None:
    cfg = normalize_runtime_config({"fault_tolerance": legacy})
    assert cfg["fault_tolerance"]["model"] == "exactly_once"


def test_reserved_env_keys() -> None:
    raw = {"env": {"TOKIO_X": "1", "MY_VAR": "x", "FELDERA_Y": "2", "RUST_LOG": "debug"}}
    refusal = _refusal(raw)
    reason = (
        "the following environment variable(s) are reserved and cannot be overridden: "
        "FELDERA_Y, RUST_LOG, TOKIO_X"
    )
    assert refusal.error_code == "InvalidRuntimeConfig"
    assert refusal.details == {"value": raw, "error": {"InvalidPipelineEnv": reason}}
    assert refusal.message.endswith(
        f"... is not valid due to: invalid pipeline environment: {reason}"
    )
    for allowed in ("HOSTNAME_X", "feldera_lower", "KUBERNETES"):
        assert normalize_runtime_config({"env": {allowed: "v"}})["env"] == {allowed: "v"}


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({"cache": "false"}, 'invalid type: string "false", expected a boolean'),
        ({"cache": None}, "invalid type: null, expected a boolean"),
        (
            {"profile": "fastest"},
            "unknown variant `fastest`, expected one of `dev`, `unoptimized`, `optimized`, "
            "`optimized_symbols`",
        ),
        ({"profile": 1}, "invalid type: integer `1`, expected string or map"),
        ({"use_platform_compiler": "no"}, 'invalid type: string "no", expected a boolean'),
        ({"runtime_version": 5}, "invalid type: integer `5`, expected a string"),
    ],
)
def test_program_config_types(raw: dict[str, Any], error: str) -> None:
    with pytest.raises(errors.ApiError) as info:
        normalize_program_config(raw)
    assert (info.value.http_status, info.value.error_code) == (400, "InvalidProgramConfig")
    assert info.value.details == {"value": raw, "error": {"DeserializationFailed": error}}
    assert info.value.message.startswith("JSON for 'program_config' field:\n")


def test_program_config_accepts_feldera_values() -> None:
    cfg = normalize_program_config(
        {"profile": None, "cache": False, "runtime_version": None, "future": 1}
    )
    assert cfg["cache"] is False and cfg["future"] == 1


@pytest.mark.parametrize(
    "tags", [[], ["a"], ["env=prod", "team/data", "a b", "x.y_z|w\\v:u-t"], ["t"] * 50, ["x" * 50]]
)
def test_valid_tags(tags: list[str]) -> None:
    validate_tags(tags)


@pytest.mark.parametrize(
    ("tag", "reason"),
    [
        ("a,b", "it may contain only"),
        ("ü", "it may contain only"),
        ("a\n", "it may contain only"),
        ("", "it cannot be empty"),
        ("x" * 51, "it is 51 characters long, but the maximum is 50"),
    ],
)
def test_invalid_tags(tag: str, reason: str) -> None:
    with pytest.raises(errors.ApiError) as info:
        validate_tags(["ok", tag])
    refusal = info.value
    assert (refusal.http_status, refusal.error_code) == (400, "InvalidTag")
    assert refusal.details is not None and refusal.details["tag"] == tag
    assert refusal.details["reason"].startswith(reason)
    assert refusal.message == f"Tag '{tag}' is invalid: {refusal.details['reason']}"


def test_too_many_tags() -> None:
    with pytest.raises(errors.ApiError) as info:
        validate_tags([f"t{i}" for i in range(51)])
    assert info.value.error_code == "TooManyTags"
    assert info.value.details == {"count": 51, "maximum": 50}
    assert info.value.message == "Pipeline has more tags (51) than the maximum allowed (50)"


def test_missing_program_code_is_refused_first() -> None:
    # Feldera's JSON extractor refuses the body before the name is looked at.
    with pytest.raises(errors.ApiError) as info:
        validate_definition(**_definition(name="", program_code=None))
    assert (info.value.http_status, info.value.error_code) == (400, "InvalidRequest")
    assert "missing field `program_code`" in info.value.message
    assert validate_definition(**_definition()).program_code == ""


def test_checks_run_in_felderas_order() -> None:
    # name, description, tags, runtime_config, program_config
    bad = {"tags": ["a,b"], "runtime_config": {"workers": "x"}, "program_config": {"cache": 1}}
    order = [
        ("name", "bad name", "NameDoesNotMatchPattern"),
        ("description", "d" * 301, "InvalidDescription"),
        ("tags", bad["tags"], "InvalidTag"),
        ("runtime_config", bad["runtime_config"], "InvalidRuntimeConfig"),
        ("program_config", bad["program_config"], "InvalidProgramConfig"),
    ]
    for index, (_, _, code) in enumerate(order):
        fields = _definition(**{field: value for field, value, _ in order[index:]})
        with pytest.raises(errors.ApiError) as info:
            validate_definition(**fields)
        assert info.value.error_code == code
