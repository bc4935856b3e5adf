"""Durable small JSON files: write-temp, fsync, rename, fsync the directory.

A write or removal the file system refuses (full, read-only, I/O error) is a CNIError with
code 105 naming the file, and a failed write leaves neither a temporary nor a torn record:
the previous content, if any, stays.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import CNIError, ErrorCode

log = logging.getLogger(__name__)

# Temporaries unique per write, so concurrent writers of one path never share one.
_tmp_counter = itertools.count()


def _state_error(action: str, path: Path, exc: OSError) -> CNIError:
    return CNIError(
        ErrorCode.STATE_FAILED,
        f"cannot {action} state file {path}: {exc.strerror or exc}",
        "the agent's state dir must be writable and have free space",
    )


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{next(_tmp_counter)}.tmp")
    body = json.dumps(data, indent=1, sort_keys=True).encode() + b"\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            # os.write may write less than asked (a nearly full disk): loop, never tear
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise _state_error("write", path, exc) from exc


def read_json(path: Path) -> dict[str, Any] | None:
    """The record at ``path``; None if missing, or if torn/corrupt (logged, left for inspection)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        log.error("ignoring corrupt state file %s (%d bytes)", path, len(raw))
        return None
    if not isinstance(data, dict):
        log.error("ignoring state file %s: not a JSON object", path)
        return None
    return data


def remove(path: Path) -> bool:
    try:
        path.unlink()
        _fsync_dir(path.parent)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise _state_error("remove", path, exc) from exc
    return True


def _fsync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
