"""A fingerprint of the Stopcock code on disk, to tell processes of different builds apart.

The runtime template (stopcock.runtime.template) outlives the manager, so after
an upgrade that kept the internal PROTOCOL it would still fork runtimes
running the old code; it reports this fingerprint of the code it imported,
and a manager whose own differs replaces it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # server/stopcock (a namespace package)


def code_fingerprint() -> str:
    """Hash of every module's path, size and mtime: a stat per file, no reading."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        try:
            st = path.stat()
        except OSError:
            continue
        digest.update(f"{path.relative_to(_PACKAGE)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
