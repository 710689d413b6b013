"""Looking Glass client: finding it and reading its release (DESIGN.md 4.1).

(The client supervision, ``LookingGlassManager`` and ``LGClientConfig``, comes with the
Looking Glass issue; this part is shared with ``neuron-vm doctor``.)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

CLIENT_NAME = "looking-glass-client"
USUAL_PATHS = (
    "/usr/bin/looking-glass-client",
    "/usr/local/bin/looking-glass-client",
    "/opt/looking-glass/bin/looking-glass-client",
    "/opt/looking-glass/client/build/looking-glass-client",
)
_VERSION = re.compile(r"Looking Glass \(([^)]+)\)")


def find_client(environ: dict | None = None) -> Path | None:
    """``$NEURONOS_LG_CLIENT``, then ``looking-glass-client`` on PATH, then the usual
    install paths."""
    env = os.environ if environ is None else environ
    override = env.get("NEURONOS_LG_CLIENT")
    if override:
        return Path(override) if os.access(override, os.X_OK) else None
    on_path = shutil.which(CLIENT_NAME, path=env.get("PATH"))
    if on_path:
        return Path(on_path)
    for candidate in USUAL_PATHS:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def client_release(client: Path, timeout: float = 5.0) -> str | None:
    """The release (``B7``, ``B6``, ``B7-188-g...``): the client has no --version; its first
    log lines carry ``Looking Glass (<release>)`` behind a log prefix, and ``--help`` prints
    them too (then exits 255)."""
    try:
        result = subprocess.run([str(client), "--help"], capture_output=True, text=True,
                                timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(result.stderr + result.stdout)
    return match.group(1) if match else None
