"""The `stopcock` command line (installed into the virtualenv by `make venv`).

Every command but two talks to a running manager over gRPC through
`stopcock.client`, at --address / $STOPCOCK_ADDRESS with --token /
$STOPCOCK_TOKEN, so the CLI is also a worked example of the client library.
The two exceptions: `serve` runs the manager and Envoy (as `make run`), and

    stopcock api-key create NAME --role read|write

mints an API key straight into the database under STOPCOCK_DATA_DIR, with
no server running (how the first key of an installation is made), and
prints it: it is shown this once, only its hash is stored. A running manager
picks the new key up the first time it is presented. `--via-server` creates
it through the API instead.

Failures are one line on stderr, `error: <message> (<error_code>)`, and an
exit code that says what kind of failure it was (see EXIT_CODES), so that a
script can tell "the pipeline failed" from "the wait timed out" without
parsing text. `main` runs typer in non-standalone mode to catch them all in
one place, usage errors included, and never shows a traceback.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from stopcock.client import Client, Pipeline, PipelineDefinition, PipelineFailed, StopcockError
from stopcock.client.connection import ADDRESS_ENV, DEFAULT_ADDRESS, TOKEN_ENV
from stopcock.client.errors import CheckpointFailed, WaitTimeout
from stopcock.client.models import rfc3339
from stopcock.client.render import TransitionLog, summary, timestamp, to_json, to_yaml
from stopcock.client.waiting import DEFAULT_TIMEOUT, Target


class Exit(IntEnum):
    OK = 0
    ERROR = 1  # the API refused or failed a call, the manager is unreachable, a bad file
    USAGE = 2  # the command line itself is wrong (click/typer's own code)
    FAILED = 3  # what --wait waited for failed: the pipeline stopped with an error
    TIMEOUT = 4  # --wait gave up after --timeout seconds
    INTERRUPTED = 130  # Ctrl-C


EXIT_CODES = (
    "Exit codes: 0 success; 1 error (the API refused the call, the manager is unreachable, "
    "a bad input file); 2 bad command-line usage; 3 the pipeline ended with a deployment "
    "error (or the checkpoint failed) while --wait waited; 4 --wait timed out."
)

app = typer.Typer(
    help=(
        "Stopcock: a control plane for long-running, stateful data pipelines.\n\n"
        f"Commands reach the manager's gRPC API at --address (${ADDRESS_ENV}, default "
        f"{DEFAULT_ADDRESS}) with --token (${TOKEN_ENV}) when authentication is on. "
        f"Errors are one line on stderr: 'error: <message> (<error_code>)'.\n\n{EXIT_CODES}"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="API keys (for STOPCOCK_AUTH=on).", no_args_is_help=True)
app.add_typer(keys_app, name="api-key")
# Never wrapped: an error stays one line, and piped output keeps whole names (rich
# would otherwise cut a table to 80 columns when stdout is not a terminal).
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 10_000)


class Output(StrEnum):
    text = "text"
    json = "json"
    yaml = "yaml"


Name = Annotated[
    str, typer.Argument(metavar="NAME", help="The pipeline's name.", show_default=False)
]
Address = Annotated[
    str | None,
    typer.Option(
        "--address",
        envvar=ADDRESS_ENV,
        help=f"The manager's gRPC address (default {DEFAULT_ADDRESS}).",
        show_default=False,
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar=TOKEN_ENV,
        help="An API key or JWT, sent as 'Authorization: Bearer <token>'.",
        show_default=False,
    ),
]
Wait = Annotated[
    bool, typer.Option("--wait", help="Follow the pipeline until done, showing each change.")
]
Timeout = Annotated[
    float,
    typer.Option("--timeout", min=0, help="How long --wait waits, in seconds (then exit 4)."),
]
Format = Annotated[Output, typer.Option("--output", "-o", help="How to print the result.")]


def _say(text: str) -> None:
    """One line of output, flushed: --wait shows changes as they happen, even when piped."""
    print(text, flush=True)


def _follow(
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
            _say(line)

    pipeline = client.wait_for(
        name, target, timeout, on_change=show, after_refresh_version=after_refresh_version
    )
    if pipeline.deployment_error is not None and pipeline.deployment_status == "Stopped":
        raise PipelineFailed(pipeline)
    return pipeline


def _dump(data: Any, output: Output) -> None:
    if output is Output.yaml:
        print(to_yaml(data), end="", flush=True)
    else:
        print(to_json(data), flush=True)


# -- the server ------------------------------------------------------------------


@app.command()
def serve() -> None:
    """Run the manager and its Envoy sidecar (as `make run`) until Ctrl-C.

    Configured by the environment: STOPCOCK_GRPC_PORT, STOPCOCK_REST_PORT,
    STOPCOCK_BIND_ADDRESS, STOPCOCK_DATA_DIR, STOPCOCK_AUTH... (see the README).
    """
    from stopcock import launcher

    launcher.main()


# -- definitions --------------------------------------------------------------------


@app.command()
def apply(
    file: Annotated[
        typer.FileText,
        typer.Option(
            "--file",
            "-f",
            help="A pipeline definition as JSON (or YAML: *.yaml, *.yml, stdin); - is stdin.",
            show_default=False,
        ),
    ],
    address: Address = None,
    token: Token = None,
) -> None:
    """Create a pipeline or replace its definition (name, program_code, runtime_config...)."""
    yaml = file.name == "<stdin>" or file.name.endswith((".yaml", ".yml"))
    definition = PipelineDefinition.from_text(file.read(), yaml=yaml)
    with Client(address, token) as client:
        result = client.put(definition)
    verb = "created" if result.created else "updated"
    p = result.pipeline
    _say(f"pipeline '{p.name}' {verb} (version {p.version}, program {p.program_status})")


@app.command("list")
def list_pipelines(
    output: Format = Output.text, address: Address = None, token: Token = None
) -> None:
    """List every pipeline: status, desired status, since when, and its error if any."""
    with Client(address, token) as client:  # the table needs only the small status view
        pipelines = client.list(selector="status" if output is Output.text else "all")
    if output is not Output.text:
        _dump([p.to_dict() for p in pipelines], output)
        return
    if not pipelines:
        err.print("no pipelines")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "STATUS", "DESIRED", "SINCE", "ERROR"):
        table.add_column(column, no_wrap=True)
    for p in pipelines:
        error = p.error_code or "-"
        since = timestamp(p.deployment_status_since)
        row = (p.name, p.deployment_status, p.deployment_desired_status, since, error)
        table.add_row(*(escape(cell) for cell in row))
    out.print(table)


@app.command()
def get(
    name: Name, output: Format = Output.text, address: Address = None, token: Token = None
) -> None:
    """Show a pipeline: a summary, or every field with -o json / -o yaml."""
    with Client(address, token) as client:
        pipeline = client.get(name)
    if output is not Output.text:
        _dump(pipeline.to_dict(), output)
        return
    rows = summary(pipeline)
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        _say(f"{label + ':':<{width}}{value}")


@app.command()
def delete(name: Name, address: Address = None, token: Token = None) -> None:
    """Delete a pipeline (it must be stopped, with its storage cleared)."""
    with Client(address, token) as client:
        client.delete(name)
    _say(f"pipeline '{name}' deleted")


# -- deployment -------------------------------------------------------------------


def _request(
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
        _say(f"{what} of pipeline '{name}' requested")
        return
    before = client.get(name, "status").refresh_version
    action()
    after = client.get(name, "status").refresh_version
    _follow(client, name, target, timeout, before if after != before else 0)


@app.command()
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
        _request(client, name, action, "start", target, wait=wait, timeout=timeout)


@app.command()
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
        _request(client, name, action, "pause", "Paused", wait=wait, timeout=timeout)


@app.command()
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
        _request(client, name, action, "resume", "Running", wait=wait, timeout=timeout)


@app.command()
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
        _request(client, name, action, "stop", "Stopped", wait=wait, timeout=timeout)


@app.command()
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
            _say(f"checkpoint {number} of pipeline '{name}' requested")
            return
        client.wait_for_checkpoint(name, requested, timeout)
    _say(f"checkpoint {number} of pipeline '{name}' written")


@app.command("dismiss-error")
def dismiss_error(name: Name, address: Address = None, token: Token = None) -> None:
    """Clear a stopped pipeline's deployment error."""
    with Client(address, token) as client:
        client.dismiss_error(name)
    _say(f"deployment error of pipeline '{name}' dismissed")


@app.command()
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
            _say(f"storage of pipeline '{name}' cleared")
            return
    _say(f"clearing the storage of pipeline '{name}'")


@app.command()
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


# -- API keys ---------------------------------------------------------------------


def _data_dir() -> Path:
    return Path(os.environ.get("STOPCOCK_DATA_DIR", ".stopcock")).absolute()


def _create_key_offline(name: str, role: str) -> str:
    """Writes the key's record into the database itself: no server needed."""
    import sqlite3

    from stopcock.manager import api_keys, errors
    from stopcock.manager.store import SqliteStore

    try:
        record, key = api_keys.new_record(name, role)
        store = SqliteStore(_data_dir() / "stopcock.db")
        try:
            store.put_api_key(record)
        finally:
            store.close()
    except errors.ApiError as exc:
        raise StopcockError(exc.message, exc.error_code, exc.http_status, exc.details) from None
    except sqlite3.IntegrityError:
        raise StopcockError(
            f"an API key named '{name}' already exists", "DuplicateName", 409
        ) from None
    except (OSError, sqlite3.Error) as exc:
        raise StopcockError(f"cannot write to {_data_dir()}: {exc}", "DataDirError") from None
    return key


@keys_app.command("create")
def create_key(
    name: str = typer.Argument(
        ..., metavar="NAME", help="A name for the key (pipeline-name rules)."
    ),
    role: str = typer.Option("write", "--role", help="read (GET calls only) or write."),
    via_server: bool = typer.Option(
        False,
        "--via-server",
        help="Create it through the API (needs a write --token) instead of in STOPCOCK_DATA_DIR.",
    ),
    address: Address = None,
    token: Token = None,
) -> None:
    """Mint an API key into STOPCOCK_DATA_DIR's database (or --via-server) and print it once."""
    if via_server:
        with Client(address, token) as client:
            key = client.create_api_key(name, role).api_key
    else:
        key = _create_key_offline(name, role)
    err.print(
        f"API key [bold]{escape(name)}[/bold] (role {escape(role)}) created. It is shown only "
        "now; send it as 'Authorization: Bearer <key>':"
    )
    print(key)


@keys_app.command("list")
def list_keys(output: Format = Output.text, address: Address = None, token: Token = None) -> None:
    """List the API keys: names, roles, creation times (never the keys)."""
    with Client(address, token) as client:
        keys = client.list_api_keys()
    if output is not Output.text:
        rows = [
            {"id": k.id, "name": k.name, "role": k.role, "created_at": rfc3339(k.created_at)}
            for k in keys
        ]
        _dump(rows, output)
        return
    if not keys:
        err.print("no API keys")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "ROLE", "CREATED"):
        table.add_column(column, no_wrap=True)
    for k in keys:
        table.add_row(escape(k.name), escape(k.role), timestamp(k.created_at))
    out.print(table)


@keys_app.command("delete")
def delete_key(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The key's name.", show_default=False)
    ],
    address: Address = None,
    token: Token = None,
) -> None:
    """Delete an API key: it stops working at once."""
    with Client(address, token) as client:
        client.delete_api_key(name)
    _say(f"API key '{name}' deleted")


# -- the entry point ----------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fail(message: str, code: str, exit_code: int) -> int:
    err.print(f"[red]error:[/red] {escape(_one_line(message))} ({escape(code)})")
    return exit_code


def run(args: list[str]) -> int:
    """Runs one command line; returns its exit code (see Exit)."""
    try:
        result = app(args=args, prog_name="stopcock", standalone_mode=False)
    except StopcockError as exc:
        if isinstance(exc, PipelineFailed | CheckpointFailed):
            exit_code = Exit.FAILED
        elif isinstance(exc, WaitTimeout):
            exit_code = Exit.TIMEOUT
        else:
            exit_code = Exit.ERROR
        return _fail(exc.message, exc.error_code, exit_code)
    except typer.TyperException as exc:  # typer's own click: usage errors, unreadable files
        if type(exc).__name__ == "NoArgsIsHelpError":
            return Exit.USAGE  # the help is already printed (as typer itself checks it)
        ctx = getattr(exc, "ctx", None)
        hint = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
        code = getattr(exc, "exit_code", Exit.USAGE)
        return _fail(exc.format_message().rstrip(".") + hint, "UsageError", code)
    except (typer.Abort, KeyboardInterrupt):
        return Exit.INTERRUPTED
    except Exception as exc:  # a bug here: still one line, unless asked for the traceback
        if os.environ.get("STOPCOCK_DEBUG"):
            traceback.print_exc()
        return _fail(f"unexpected {type(exc).__name__}: {exc}", "InternalError", Exit.ERROR)
    return result if isinstance(result, int) else Exit.OK


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
