"""Durable small JSON files: write-temp, fsync, rename, fsync the directory.

A write or removal the file system refuses (full, read-only, I/O error) is a CNIError with
code 105 naming the file, and a failed write leaves neither a temporary nor a torn record:
the previous content, if any, stays.

Reading trusts only what the agent itself could have written: the state dir must belong to
the agent's user and be writable by nobody else (``check_state_dir``), and a file in it
that belongs to another user, is writable by others or is a symlink is skipped with a
warning. A record from there drives what the agent does as root at start (a delegated IPAM
plugin is exec'd to tear an interrupted ADD down), so a planted one must never be read.
A record that parses but has the wrong shape is a ``ShapeError`` naming the field; the
loaders set such a file aside as ``<name>.corrupt`` (``set_aside``) and carry on.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

from ...cni.errors import CNIError, ErrorCode

log = logging.getLogger(__name__)

# Per-record paths are plain strings on the hot path (keyed_file): Python 3.11's pathlib
# interns every path part, and a name per pod and per temporary (three writes an ADD) kept
# growing the interpreter's interned-string table (1.9 MiB over a 20,000-pod soak).
StrPath = str | Path


def keyed_file(folder: str, key: str, digits: int) -> str:
    """``folder``/<``digits`` hex digits of sha256(``key``)>.json: keys hold slashes and
    runtime-chosen text; a digest makes a safe, fixed-size name."""
    return os.path.join(folder, f"{hashlib.sha256(key.encode()).hexdigest()[:digits]}.json")


# Temporaries unique per write, so concurrent writers of one path never share one.
_tmp_counter = itertools.count()


def _state_error(action: str, path: StrPath, exc: OSError) -> CNIError:
    return CNIError(
        ErrorCode.STATE_FAILED,
        f"cannot {action} state file {path}: {exc.strerror or exc}",
        "the agent's state dir must be writable and have free space",
    )


class ShapeError(ValueError):
    """A state record of valid JSON whose ``field`` does not hold what it must."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field {field!r} {problem}")
        self.field = field


class StateDirError(Exception):
    """The state dir cannot be trusted; the message names the path and the fix."""


def untrusted(st: os.stat_result) -> str | None:
    """Why a state file or dir with this stat must not be trusted, or None."""
    euid = os.geteuid()
    if st.st_uid != euid:
        return f"owned by uid {st.st_uid}, not by the agent's uid {euid}"
    if st.st_mode & 0o022:
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def check_state_dir(path: Path) -> None:
    """Refuse a state dir (or its subdirs) that another user could write to."""
    for directory in (path, *(p for p in sorted(path.iterdir()) if p.is_dir())):
        st = directory.lstat()
        why = "a symlink" if stat.S_ISLNK(st.st_mode) else untrusted(st)
        if why is not None:
            uid = os.geteuid()
            raise StateDirError(
                f"refusing state dir {directory}: it is {why}; records in it make the agent "
                f"run commands as uid {uid}. Fix: chown {uid}: {directory} && "
                f"chmod 0700 {directory} (and check what is in it)"
            )


def read_trusted(path: StrPath) -> bytes | None:
    """The bytes of ``path``; None if missing or not trustworthy (skipped with a warning)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            log.warning("skipping state file %s: it is a symlink", path)
            return None
        raise
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        why = untrusted(st) if stat.S_ISREG(st.st_mode) else "not a regular file"
        if why is not None:
            log.warning("skipping state file %s: %s", path, why)
            return None
        return fh.read()


def set_aside(path: StrPath, reason: str) -> Path | None:
    """Rename a bad record to ``<name>.corrupt`` (kept for inspection); log why."""
    path = Path(path)
    aside = path.with_name(path.name + ".corrupt")
    log.error("state file %s is corrupt (%s); set aside as %s", path, reason, aside.name)
    try:
        os.replace(path, aside)
    except OSError as exc:
        log.error("cannot set %s aside: %s", path, exc)
        return None
    return aside


def write_json(path: StrPath, data: dict[str, Any], *, sort_keys: bool = True) -> None:
    folder, name = _folder(path), os.path.basename(path)
    stem = os.path.splitext(name)[0]
    tmp = os.path.join(folder, f".{stem}.{os.getpid()}.{next(_tmp_counter)}.tmp")
    # Compact: with an indent json.dumps falls back to its pure-Python encoder, 4x slower,
    # and every ADD writes three records (`jq .` shows one indented).
    body = json.dumps(data, sort_keys=sort_keys, separators=(",", ":")).encode() + b"\n"
    try:
        _write_synced(tmp, body, os.O_CREAT | os.O_EXCL)
        os.replace(tmp, path)
        _fsync_dir(folder)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _state_error("write", path, exc) from exc


def append_line(path: StrPath, line: bytes) -> None:
    """Append ``line`` to ``path`` (created 0600) and fsync it; CNIError (105) if it fails."""
    try:
        _write_synced(path, line, os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW)
    except OSError as exc:
        raise _state_error("write", path, exc) from exc


def _write_synced(path: StrPath, data: bytes, flags: int) -> None:
    """Write all of ``data`` to ``path`` (opened 0600 with ``flags``) and fsync it."""
    os.makedirs(_folder(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | flags, 0o600)
    try:
        # os.write may write less than asked (a nearly full disk): loop, never tear
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: StrPath, *, aside: bool = False) -> dict[str, Any] | None:
    """The record at ``path``; None if missing, untrusted, or torn/corrupt (logged, and
    with ``aside`` renamed to ``*.corrupt``, else left in place for inspection)."""
    raw = read_trusted(path)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        log.error("ignoring corrupt state file %s (%d bytes)", path, len(raw))
        if aside:
            set_aside(path, "not valid JSON")
        return None
    if not isinstance(data, dict):
        log.error("ignoring state file %s: not a JSON object", path)
        if aside:
            set_aside(path, "not a JSON object")
        return None
    return data


def remove(path: StrPath) -> bool:
    try:
        os.unlink(path)
        _fsync_dir(_folder(path))
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise _state_error("remove", path, exc) from exc
    return True


def _folder(path: StrPath) -> str:
    return os.path.dirname(path) or "."


def _fsync_dir(directory: StrPath) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
