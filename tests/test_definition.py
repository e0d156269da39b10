"""Validation of names and configurations (pure)."""

from __future__ import annotations

import pytest
from stopcock.manager.domain import errors
from stopcock.manager.domain.definition import normalize_runtime_config, validate_name


@pytest.mark.parametrize("name", ["a", "a1", "A-b_c9", "x" * 63])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    ("name", "code", "details"),
    [
        ("", "EmptyName", None),
        ("x" * 64, "TooLongName", {"name": "x" * 64, "length": 64, "maximum": 63}),
        ("-a", "NameDoesNotMatchPattern", None),
        ("a-", "NameDoesNotMatchPattern", None),
        ("a b", "NameDoesNotMatchPattern", None),
        ("é", "NameDoesNotMatchPattern", None),
    ],
)
def test_invalid_names(name: str, code: str, details: object) -> None:
    with pytest.raises(errors.ApiError) as info:
        validate_name(name)
    assert (info.value.http_status, info.value.error_code) == (400, code)
    if details is not None:
        assert info.value.details == details
    if code == "NameDoesNotMatchPattern":
        assert info.value.details is not None
        assert info.value.details["pattern"] == "^([A-Za-z0-9][-A-Za-z0-9_]*)?[A-Za-z0-9]$"


def test_runtime_config_defaults() -> None:
    cfg = normalize_runtime_config(None)
    assert cfg["storage"] == {}
    assert cfg["fault_tolerance"] == {"model": "none", "checkpoint_interval_secs": 60}
    assert cfg["provisioning_timeout_secs"] == 20


def test_runtime_config_normalization() -> None:
    cfg = normalize_runtime_config(
        {
            "storage": False,
            "fault_tolerance": {"model": "exactly_once", "checkpoint_interval_secs": 99999.0},
            "provisioning_timeout_secs": 5.0,
            "unknown_key": "kept",
        }
    )
    assert cfg["storage"] is None
    assert cfg["fault_tolerance"]["checkpoint_interval_secs"] == 3600
    assert cfg["provisioning_timeout_secs"] == 5
    assert cfg["unknown_key"] == "kept"


@pytest.mark.parametrize(
    "raw",
    [
        {"fault_tolerance": {"model": "sometimes"}},
        {"provisioning_timeout_secs": 0},
        {"provisioning_timeout_secs": 1.5},
        {"provisioning_timeout_secs": "20"},
        {"storage": "yes"},
        {"workers": 0},
    ],
)
def test_invalid_runtime_config(raw: dict[str, object]) -> None:
    with pytest.raises(errors.ApiError) as info:
        normalize_runtime_config(raw)
    assert info.value.error_code == "InvalidRuntimeConfig"
    assert info.value.details is not None and info.value.details["value"] == raw


def test_duration_strings_of_newer_clients() -> None:
    cfg = normalize_runtime_config(
        {
            "fault_tolerance": {"model": "at_least_once", "checkpoint_interval": "1m 30s"},
            "provisioning_timeout": "2500ms",
        }
    )
    assert cfg["fault_tolerance"]["checkpoint_interval_secs"] == 90
    assert cfg["provisioning_timeout_secs"] == 3  # rounded up: never shorter than asked
    for bad in (
        {"provisioning_timeout": "soon"},
        {"provisioning_timeout": 5},
        {"fault_tolerance": {"checkpoint_interval": "1 fortnight"}},
    ):
        with pytest.raises(errors.ApiError) as info:
            normalize_runtime_config(bad)
        assert info.value.error_code == "InvalidRuntimeConfig"
