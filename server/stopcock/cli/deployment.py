"""Deployment: `stopcock start`, `pause`, `resume`, `stop`, `checkpoint`,
`dismiss-error`, `clear` and `logs`.

The first four only ask for a new desired status; with --wait they follow the
pipeline there (see waiting), exiting 3 if it fails and 4 on timeout.
"""

from __future__ import annotations

import functools
import sys
from typing import Annotated

import typer
from stopcock.cli.options import Address, Name, Timeout, Token, Wait
from stopcock.cli.output import say
from stopcock.cli.waiting import request
from stopcock.client import Client, Pipeline
from stopcock.client.waiting import DEFAULT_TIMEOUT


def start(
    name: Name,
    *,
    paused: Annotated[bool, typer.Option("--paused", help="Start it paused.")] = False,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    address: Address = None,
    token: Token = None,
) -> None:
    """Start a pipeline (resuming from its latest checkpoint, if any)."""
    with Client(address, token) as client:
        target = "Paused" if paused else "Running"
        action = functools.partial(client.start, name, paused=paused)
        request(client, name, action, "start", target, wait=wait, timeout=timeout)


def pause(
    name: Name,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    address: Address = None,
    token: Token = None,
) -> None:
    """Pause a running pipeline (it stops taking input)."""
    with Client(address, token) as client:
        action = functools.partial(client.pause, name)
        request(client, name, action, "pause", "Paused", wait=wait, timeout=timeout)


def resume(
    name: Name,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    address: Address = None,
    token: Token = None,
) -> None:
    """Resume a paused pipeline."""
    with Client(address, token) as client:
        action = functools.partial(client.resume, name)
        request(client, name, action, "resume", "Running", wait=wait, timeout=timeout)


def stop(
    name: Name,
    *,
    force: Annotated[
        bool, typer.Option("--force", help="Stop at once, without a final checkpoint.")
    ] = False,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    address: Address = None,
    token: Token = None,
) -> None:
    """Stop a pipeline: suspend it (final checkpoint, then stop), or with --force at once.

    With --wait, shows each status change as it happens and exits 3 if the
    pipeline ends with a deployment error (e.g. SuspendFailed), 4 on timeout.
    """
    with Client(address, token) as client:
        action = functools.partial(client.stop, name, force=force)
        request(client, name, action, "stop", "Stopped", wait=wait, timeout=timeout)


def checkpoint(
    name: Name,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is written.")] = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    address: Address = None,
    token: Token = None,
) -> None:
    """Ask a running pipeline for a checkpoint (exit 3 with --wait if it fails)."""
    with Client(address, token) as client:
        requested = client.checkpoint(name)
        number = requested.sequence_number
        if not wait:
            say(f"checkpoint {number} of pipeline '{name}' requested")
            return
        client.wait_for_checkpoint(name, requested, timeout)
    say(f"checkpoint {number} of pipeline '{name}' written")


def dismiss_error(name: Name, address: Address = None, token: Token = None) -> None:
    """Clear a stopped pipeline's deployment error."""
    with Client(address, token) as client:
        client.dismiss_error(name)
    say(f"deployment error of pipeline '{name}' dismissed")


def clear(
    name: Name,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    address: Address = None,
    token: Token = None,
) -> None:
    """Delete a stopped pipeline's storage (checkpoints): its next start is fresh."""

    def cleared(p: Pipeline) -> bool:
        return p.storage_status == "Cleared"

    with Client(address, token) as client:
        client.clear_storage(name)
        if wait:
            client.wait_for(name, cleared, timeout, fail_on_error=False)
            say(f"storage of pipeline '{name}' cleared")
            return
    say(f"clearing the storage of pipeline '{name}'")


def logs(
    name: Name,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines while it runs.")
    ] = False,
    address: Address = None,
    token: Token = None,
) -> None:
    """Print the log of the pipeline's runtime process."""
    with Client(address, token) as client:
        for text in client.logs(name, follow=follow):
            sys.stdout.write(text)
            sys.stdout.flush()
