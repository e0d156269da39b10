"""Client results as text for people and for tools: what the `stopcock` CLI prints.

Kept out of the CLI module so that the wording of a transition or a summary
can be tested and reused (in a script's own output) without going through
typer. Times are shown in local time, since that is the clock the reader
has; machine output (JSON, YAML) keeps RFC 3339 UTC.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from stopcock.client.models import Pipeline

ARROW = "→"


def clock(moment: datetime) -> str:
    """Local wall-clock time with milliseconds: for lines that follow each other."""
    return moment.astimezone().strftime("%H:%M:%S.%f")[:-3]


def timestamp(moment: datetime | None) -> str:
    """Local date and time to the second: for a state that may be days old."""
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def to_yaml(data: Any) -> str:
    import yaml

    text: str = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return text


def _suspend_progress(p: Pipeline) -> str | None:
    """The retries of a suspend that meets a temporary storage error, if any."""
    details = p.deployment_runtime_status_details
    suspend = details.get("suspend") if isinstance(details, dict) else None
    if not isinstance(suspend, dict):
        return None
    return f"suspend attempt {suspend.get('attempts', '?')}: {suspend.get('last_error', '?')}"


class TransitionLog:
    """Turns a pipeline's successive states into one line per visible change.

    A line is due when the deployment status, the desired status, the
    deployment error or a suspend's retry report changes; the many other
    changes a watch delivers (runtime details, locations) are not news to a
    person waiting for a stop. Each line is stamped with the server's time
    of that change, not the time it was printed.
    """

    def __init__(self) -> None:
        self._last: Pipeline | None = None

    def line(self, p: Pipeline) -> str | None:
        before = self._last
        self._last = p
        if before is None:
            moment = max(p.deployment_status_since, p.deployment_desired_status_since)
            return f"{clock(moment)}  {p.deployment_status} (desired {p.deployment_desired_status})"
        status_changed = before.deployment_status != p.deployment_status
        desired_changed = before.deployment_desired_status != p.deployment_desired_status
        progress = _suspend_progress(p)
        news = (
            status_changed
            or desired_changed
            or before.deployment_error != p.deployment_error
            or progress != _suspend_progress(before)
        )
        if not news:
            return None
        status = p.deployment_status
        if status_changed:
            status = f"{before.deployment_status} {ARROW} {status}"
        desired = p.deployment_desired_status
        if desired_changed:
            desired = f"{before.deployment_desired_status} {ARROW} {desired}"
        moment = p.deployment_desired_status_since
        if status_changed or not desired_changed:
            moment = p.deployment_status_since
        text = f"{clock(moment)}  {status} (desired {desired})"
        if p.error_code is not None and p.error_code != before.error_code:
            text += f": {p.error_code}"
        elif progress is not None:
            text += f": {progress}"
        return text


def _error_text(error: dict[str, Any] | None) -> str:
    if error is None:
        return "-"
    return f"{error.get('error_code', '?')}: {error.get('message', '')}"


def _program_problems(program_error: dict[str, Any] | None) -> list[str]:
    """The compiler's messages: {sql_compilation: {messages: [{message, ...}]}, ...}."""
    problems: list[str] = []
    for found in (program_error or {}).values():
        messages = found.get("messages") if isinstance(found, dict) else None
        if isinstance(messages, list):
            problems += [
                str(m.get("message", m)) if isinstance(m, dict) else str(m) for m in messages
            ]
        elif found:
            problems.append(str(found))
    return problems


def summary(p: Pipeline) -> list[tuple[str, str]]:
    """The facts of `stopcock get`, as (label, value) rows."""
    runtime = "-"
    if p.deployment_runtime_status is not None:
        runtime = f"{p.deployment_runtime_status} (desired {p.deployment_runtime_desired_status})"
    checkpoints = (p.storage_status_details or {}).get("checkpoints")
    storage = p.storage_status
    if isinstance(checkpoints, list):
        storage += f", {len(checkpoints)} checkpoint(s)"
    program = f"{p.program_status} (version {p.program_version})"
    problems = _program_problems(p.program_error)
    if problems:
        program += ": " + "; ".join(problems)
    rows = [
        ("name", p.name),
        ("id", p.id),
        ("description", p.description or "-"),
        (
            "status",
            f"{p.deployment_status} since {timestamp(p.deployment_status_since)}",
        ),
        ("desired", p.deployment_desired_status),
        (
            "resources",
            f"{p.deployment_resources_status} (desired {p.deployment_resources_desired_status})",
        ),
        ("runtime", runtime),
        ("location", p.deployment_location or "-"),
        ("error", _error_text(p.deployment_error)),
        ("program", program),
        ("storage", storage),
        ("version", str(p.version)),
        ("refresh_version", str(p.refresh_version)),
        ("created", timestamp(p.created_at)),
    ]
    if p.tags:
        rows.append(("tags", ", ".join(p.tags)))
    return rows
