"""The arguments and options several commands share, as typer annotations."""

from __future__ import annotations

from typing import Annotated

import typer
from stopcock.cli.output import Output
from stopcock.client.connection import ADDRESS_ENV, DEFAULT_ADDRESS, TOKEN_ENV

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
