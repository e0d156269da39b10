"""--wait: a deployment request followed live, one line per visible change."""

from __future__ import annotations

from collections.abc import Callable

from stopcock.cli.output import say
from stopcock.client import Client, Pipeline, PipelineFailed
from stopcock.client.render import TransitionLog
from stopcock.client.waiting import Target


def request(
    client: Client,
    name: str,
    action: Callable[[], None],
    what: str,
    target: Target,
    *,
    wait: bool,
    timeout: float,
) -> None:
    """Makes a deployment request; with --wait, follows it to `target` missing no change.

    The watch replays from the version read just before the request, so
    the first line shown is the request itself even when the pipeline moves
    on before the watch begins (an empty pipeline suspends in milliseconds).
    A request that changed nothing (stopping a stopped pipeline) has no
    version to replay: then the watch starts from the current state.
    """
    if not wait:
        action()
        say(f"{what} of pipeline '{name}' requested")
        return
    before = client.get(name, "status").refresh_version
    action()
    after = client.get(name, "status").refresh_version
    follow(client, name, target, timeout, before if after != before else 0)


def follow(
    client: Client, name: str, target: Target, timeout: float, after_refresh_version: int
) -> Pipeline:
    """Waits for `target`, printing each visible change.

    Raises PipelineFailed when the pipeline ended stopped with a deployment
    error, even if Stopped was the target: a stop that ends in SuspendFailed
    did not do what was asked.
    """
    log = TransitionLog()

    def show(p: Pipeline) -> None:
        line = log.line(p)
        if line is not None:
            say(line)

    pipeline = client.wait_for(
        name, target, timeout, on_change=show, after_refresh_version=after_refresh_version
    )
    if pipeline.deployment_error is not None and pipeline.deployment_status == "Stopped":
        raise PipelineFailed(pipeline)
    return pipeline
