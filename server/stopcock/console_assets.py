"""The web console's files (console/ at the repository root), as Envoy serves them.

Envoy answers them itself (a `direct_response` route per file, rendered by
stopcock.sidecar), so the console needs no server of its own: `GET /` is
console/index.html and `GET /console/<file>` any other file directly in
console/. Envoy reads the files when it starts; an edited file is served
after a restart. Files of other types than those below are not served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONSOLE_DIR = REPO / "console"
URL_PREFIX = "/console/"
INDEX = "index.html"
# Envoy's default direct-response limit is 4 KiB; the route config raises it
# to this (envoy/envoy.yaml, max_direct_response_body_size_bytes).
MAX_ASSET_BYTES = 1 << 20

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
# A name that is safe in a URL path and in the rendered YAML as it is.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Asset:
    url: str
    file: Path
    content_type: str


def console_assets(directory: Path = CONSOLE_DIR) -> list[Asset]:
    """The files Envoy serves, in a stable order; none when `directory` does not exist.

    ValueError for a file Envoy could not serve whole (over MAX_ASSET_BYTES)
    or whose name would need escaping: a broken console is refused when the
    config is rendered, not found by a user.
    """
    if not directory.is_dir():
        return []
    found: list[Asset] = []
    for path in sorted(directory.iterdir()):
        content_type = CONTENT_TYPES.get(path.suffix)
        if content_type is None or not path.is_file():
            continue
        if not _NAME.match(path.name):
            raise ValueError(f"console file name needs escaping: {path.name!r}")
        if path.stat().st_size > MAX_ASSET_BYTES:
            raise ValueError(f"console file over {MAX_ASSET_BYTES} bytes: {path}")
        file = path.resolve()
        found.append(Asset(URL_PREFIX + path.name, file, content_type))
        if path.name == INDEX:
            found.append(Asset("/", file, content_type))
    return found
