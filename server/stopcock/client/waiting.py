"""The decisions behind `wait_for` and `wait_for_checkpoint`, shared by both clients.

The clients own the I/O (a WatchPipeline stream, or a bounded poll of the
checkpoint status); these classes only judge each state they are shown, so
that the sync and async clients cannot disagree on what "done" or
"failed" means.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from stopcock.client.errors import (
    CheckpointFailed,
    PipelineFailed,
    StopcockError,
    WaitTimeout,
)
from stopcock.client.models import Checkpoint, CheckpointStatus, Pipeline

Target = str | Callable[[Pipeline], bool]
OnChange = Callable[[Pipeline], None]
DEFAULT_TIMEOUT = 120.0  # seconds; a suspend writes a final checkpoint, which takes a while


def _describe(target: Target) -> str:
    return f"to be {target}" if isinstance(target, str) else "to reach the awaited state"


class PipelineWait:
    """Judges the changes of one pipeline against a target.

    `target` is a `deployment_status` (e.g. "Running") or a predicate. With
    `fail_on_error`, a pipeline that is stopped with a deployment error and
    not asked to start (`Pipeline.failed`) ends the wait with PipelineFailed
    unless that state is the target itself: nothing will move it any more.
    """

    def __init__(self, name: str, target: Target, timeout: float, fail_on_error: bool) -> None:
        self.name = name
        self.target = target
        self.timeout = timeout
        self.fail_on_error = fail_on_error
        self.last: Pipeline | None = None

    def reached(self, pipeline: Pipeline) -> bool:
        """True when `pipeline` is what is awaited; raises PipelineFailed (see above)."""
        self.last = pipeline
        if isinstance(self.target, str):
            if pipeline.deployment_status == self.target:
                return True
        elif self.target(pipeline):
            return True
        if self.fail_on_error and pipeline.failed:
            raise PipelineFailed(pipeline)
        return False

    def timed_out(self) -> WaitTimeout:
        where = ""
        if self.last is not None:
            where = (
                f"; it is {self.last.deployment_status} "
                f"(desired {self.last.deployment_desired_status})"
            )
        return WaitTimeout(
            f"timed out after {self.timeout:g}s waiting for pipeline '{self.name}' "
            f"{_describe(self.target)}{where}",
            self.last,
        )

    def ended(self) -> StopcockError:
        """The watch stream ended: WatchPipeline ends only when the pipeline is deleted."""
        return StopcockError(
            f"pipeline '{self.name}' was deleted while waiting for it {_describe(self.target)}",
            "UnknownPipelineName",
            404,
            {"pipeline_name": self.name},
        )


@dataclass
class CheckpointWait:
    """Judges checkpoint statuses against one requested checkpoint."""

    name: str
    checkpoint: Checkpoint
    timeout: float
    last: CheckpointStatus | None = None

    def done(self, status: CheckpointStatus) -> bool:
        """True once a checkpoint at or after ours succeeded; CheckpointFailed if ours failed."""
        self.last = status
        wanted = self.checkpoint.sequence_number
        if status.success is not None and status.success >= wanted:
            return True
        failure = status.failure
        if failure is not None and int(failure.get("sequence_number", -1)) >= wanted:
            raise CheckpointFailed(
                f"checkpoint {wanted} of pipeline '{self.name}' failed: "
                f"{failure.get('error', 'no reason given')}",
                "CheckpointFailed",
                details=failure,
            )
        return False

    def timed_out(self) -> WaitTimeout:
        return WaitTimeout(
            f"timed out after {self.timeout:g}s waiting for checkpoint "
            f"{self.checkpoint.sequence_number} of pipeline '{self.name}'; last status: "
            f"{self.last}"
        )


def poll_intervals(first: float = 0.02, longest: float = 0.5) -> Callable[[], float]:
    """Growing pauses for a bounded poll: quick for a fast answer, gentle for a slow one."""
    current = first / 1.5

    def next_interval() -> float:
        nonlocal current
        current = min(current * 1.5, longest)
        return current

    return next_interval
