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
exit code that says what kind of failure it was (see app.Exit), so that a
script can tell "the pipeline failed" from "the wait timed out" without
parsing text. `main` runs typer in non-standalone mode to catch them all in
one place, usage errors included, and never shows a traceback.

The modules:

    app         the typer app and its command tree, exit codes, `run` and `main`
    options     the arguments and options several commands share
    output      consoles, one-line messages, tables, JSON and YAML
    pipelines   definitions: apply, list, get, delete
    deployment  start, pause, resume, stop, checkpoint, dismiss-error, clear, logs
    waiting     --wait: a request followed live, one line per change
    keys        api-key create, list, delete
"""

from stopcock.cli.app import Exit, app, main, run

__all__ = ["Exit", "app", "main", "run"]
