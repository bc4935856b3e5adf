"""Small read-only readers the fact gatherers share: a command's output, a file, JSON."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def run(cmd: list[str], *, pass_fds: Sequence[int] = (), timeout: float = 30) -> str | None:
    """stdout of a read-only command, or None if it is missing or fails."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            pass_fds=tuple(pass_fds),
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("%s: %s", " ".join(cmd), exc)
        return None
    if proc.returncode != 0:
        log.debug("%s failed: %s", " ".join(cmd), proc.stderr.strip())
        return None
    return proc.stdout


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def json_list(text: str | None) -> list[dict[str, Any]]:
    if not text:
        return []
    try:
        data = json.loads(text)
    except ValueError:
        return []
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []
