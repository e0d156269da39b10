"""The typer app: the command tree, and `run` / `main`, which turn every failure
into one line on stderr and an exit code (Exit).
"""

from __future__ import annotations

import os
import sys
import traceback
from enum import IntEnum

import typer
from rich.markup import escape
from stopcock.cli import deployment, keys, pipelines
from stopcock.cli.output import err
from stopcock.client import PipelineFailed, StopcockError
from stopcock.client.connection import ADDRESS_ENV, DEFAULT_ADDRESS, TOKEN_ENV
from stopcock.client.errors import CheckpointFailed, WaitTimeout


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


def serve() -> None:
    """Run the manager and its Envoy sidecar (as `make run`) until Ctrl-C.

    Configured by the environment: STOPCOCK_GRPC_PORT, STOPCOCK_REST_PORT,
    STOPCOCK_BIND_ADDRESS, STOPCOCK_DATA_DIR, STOPCOCK_AUTH... (see the README).
    """
    from stopcock import launcher

    launcher.main()


# The commands, in the order `stopcock --help` lists them (api-key last).
app.command()(serve)
app.command()(pipelines.apply)
app.command("list")(pipelines.list_pipelines)
app.command()(pipelines.get)
app.command()(pipelines.delete)
app.command()(deployment.start)
app.command()(deployment.pause)
app.command()(deployment.resume)
app.command()(deployment.stop)
app.command()(deployment.checkpoint)
app.command("dismiss-error")(deployment.dismiss_error)
app.command()(deployment.clear)
app.command()(deployment.logs)
keys_app.command("create")(keys.create_key)
keys_app.command("list")(keys.list_keys)
keys_app.command("delete")(keys.delete_key)


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
