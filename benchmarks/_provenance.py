"""Where a benchmark's numbers come from: the commit of the code measured (shared by the scripts of
this folder; not a benchmark itself)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit() -> str | None:
    """The commit of the code measured (``git describe``: ``-dirty`` when the work tree differs), or
    ``GPU_CHECK_COMMIT`` where the copy has no git history (a device machine), or ``None``."""
    try:
        found = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        found = None
    described = found.stdout.strip() if found is not None and found.returncode == 0 else ""
    return described or os.environ.get("GPU_CHECK_COMMIT") or None
