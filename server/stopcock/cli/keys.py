"""API keys: `stopcock api-key create`, `list` and `delete`.

`create` mints a key straight into the database, no server running (how the
first key of an installation is made): the PostgreSQL one at
STOPCOCK_DATABASE_URL when set, else SQLite under STOPCOCK_DATA_DIR; or,
with --via-server, through the API. Either way the key is printed this once,
only its hash is stored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from stopcock.cli.options import Address, Format, Token
from stopcock.cli.output import Output, dump, err, print_table, say
from stopcock.client import Client, StopcockError
from stopcock.client.models import rfc3339
from stopcock.client.render import timestamp

if TYPE_CHECKING:
    from stopcock.manager.store import ApiKeyRecord


def _data_dir() -> Path:
    return Path(os.environ.get("STOPCOCK_DATA_DIR", ".stopcock")).absolute()


def _put_in_postgres(url: str, record: ApiKeyRecord) -> None:
    import asyncio

    from stopcock.manager.store.postgres import PostgresStore

    async def put() -> None:
        store = await PostgresStore(url, max_size=1).open()
        try:
            await store.put_api_key(record)
        finally:
            await store.close()

    asyncio.run(put())


def _create_key_offline(name: str, role: str) -> str:
    """Writes the key's record into the database itself: no server needed."""
    from stopcock.manager.auth import api_keys
    from stopcock.manager.config import ConfigError, Settings
    from stopcock.manager.datadir import DataDirError, prepare, private_umask
    from stopcock.manager.domain import errors
    from stopcock.manager.store import DuplicateKey, StoreError
    from stopcock.manager.store.sqlite import SqliteStore

    # It may create the data directory and the database: private, as the
    # manager makes them (stopcock.manager.datadir).
    private_umask()
    url: str | None = None
    try:
        record, key = api_keys.new_record(name, role)
        url = Settings.from_env().database_url
        if url is not None:
            _put_in_postgres(url, record)
            return key
        prepare(_data_dir())
        store = SqliteStore(_data_dir() / "stopcock.db")
        try:
            store.put_api_key(record)
        finally:
            store.close()
    except ConfigError as exc:
        raise StopcockError(str(exc), "ConfigError") from None
    except errors.ApiError as exc:
        raise StopcockError(exc.message, exc.error_code, exc.http_status, exc.details) from None
    except DataDirError as exc:
        raise StopcockError(str(exc), "DataDirError") from None
    except DuplicateKey:
        raise StopcockError(
            f"an API key named '{name}' already exists", "DuplicateName", 409
        ) from None
    except (OSError, StoreError) as exc:
        where = "the database at STOPCOCK_DATABASE_URL" if url is not None else _data_dir()
        raise StopcockError(f"cannot write to {where}: {exc}", "DataDirError") from None
    return key


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
    """Mint an API key into the database (STOPCOCK_DATABASE_URL, else STOPCOCK_DATA_DIR's) or
    --via-server, and print it once."""
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


def list_keys(output: Format = Output.text, address: Address = None, token: Token = None) -> None:
    """List the API keys: names, roles, creation times (never the keys)."""
    with Client(address, token) as client:
        keys = client.list_api_keys()
    if output is not Output.text:
        rows = [
            {"id": k.id, "name": k.name, "role": k.role, "created_at": rfc3339(k.created_at)}
            for k in keys
        ]
        dump(rows, output)
        return
    if not keys:
        err.print("no API keys")
        return
    print_table(
        ("NAME", "ROLE", "CREATED"), [(k.name, k.role, timestamp(k.created_at)) for k in keys]
    )


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
    say(f"API key '{name}' deleted")
