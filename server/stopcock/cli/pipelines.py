"""Pipeline definitions: `stopcock apply`, `list`, `get` and `delete`."""

from __future__ import annotations

from typing import Annotated

import typer
from stopcock.cli.options import Address, Format, Name, Token
from stopcock.cli.output import Output, dump, err, print_fields, print_table, say
from stopcock.client import Client, PipelineDefinition
from stopcock.client.render import summary, timestamp


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
    say(f"pipeline '{p.name}' {verb} (version {p.version}, program {p.program_status})")


def list_pipelines(
    output: Format = Output.text, address: Address = None, token: Token = None
) -> None:
    """List every pipeline: status, desired status, since when, and its error if any."""
    with Client(address, token) as client:  # the table needs only the small status view
        pipelines = client.list(selector="status" if output is Output.text else "all")
    if output is not Output.text:
        dump([p.to_dict() for p in pipelines], output)
        return
    if not pipelines:
        err.print("no pipelines")
        return
    columns = ("NAME", "STATUS", "DESIRED", "SINCE", "ERROR")
    rows = [
        (
            p.name,
            p.deployment_status,
            p.deployment_desired_status,
            timestamp(p.deployment_status_since),
            p.error_code or "-",
        )
        for p in pipelines
    ]
    print_table(columns, rows)


def get(
    name: Name, output: Format = Output.text, address: Address = None, token: Token = None
) -> None:
    """Show a pipeline: a summary, or every field with -o json / -o yaml."""
    with Client(address, token) as client:
        pipeline = client.get(name)
    if output is not Output.text:
        dump(pipeline.to_dict(), output)
        return
    print_fields(summary(pipeline))


def delete(name: Name, address: Address = None, token: Token = None) -> None:
    """Delete a pipeline (it must be stopped, with its storage cleared)."""
    with Client(address, token) as client:
        client.delete(name)
    say(f"pipeline '{name}' deleted")
