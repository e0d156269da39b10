"""The `stopcock` command line (installed into the virtualenv by `make venv`).

    stopcock api-key create NAME --role read|write

mints an API key straight into the database under STOPCOCK_DATA_DIR, with
no server running (how the first key of an installation is made), and
prints it: it is shown this once, only its hash is stored. A running manager
picks the new key up the first time it is presented.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import typer
from rich.console import Console
from stopcock.manager import api_keys, errors
from stopcock.manager.store import SqliteStore

app = typer.Typer(
    help="Stopcock: a control plane for long-running, stateful data pipelines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="API keys (for STOPCOCK_AUTH=on).", no_args_is_help=True)
app.add_typer(keys_app, name="api-key")
err = Console(stderr=True)


def _data_dir() -> Path:
    return Path(os.environ.get("STOPCOCK_DATA_DIR", ".stopcock")).absolute()


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(1)


@keys_app.command("create")
def create_key(
    name: str = typer.Argument(..., help="A name for the key (pipeline-name rules)."),
    role: str = typer.Option("write", "--role", help="read (GET calls only) or write."),
) -> None:
    """Mint an API key into STOPCOCK_DATA_DIR's database and print it (shown once)."""
    try:
        record, key = api_keys.new_record(name, role)
        store = SqliteStore(_data_dir() / "stopcock.db")
        try:
            store.put_api_key(record)
        finally:
            store.close()
    except errors.ApiError as exc:
        raise _fail(exc.message) from None
    except sqlite3.IntegrityError:
        raise _fail(f"an API key named '{name}' already exists") from None
    except (OSError, sqlite3.Error) as exc:
        raise _fail(f"cannot write to {_data_dir()}: {exc}") from None
    err.print(
        f"API key [bold]{name}[/bold] (role {role}) created. It is shown only now; "
        "send it as 'Authorization: Bearer <key>':",
        highlight=False,
    )
    print(key)


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
