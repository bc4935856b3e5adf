"""The uplink takeover journal and the node-wide lock that serialises takeovers.

The journal (``<state_dir>/uplink.json``) holds the snapshot of the uplink taken before
anything changed, and the name of every step as it begins. It is replaced atomically
(write-temp, fsync, rename, fsync dir), so after a crash it shows either the previous or
the new record, never a torn one. It also records the boot and the network namespace it
belongs to: a journal left over from before a reboot, or from another namespace, describes
a world that no longer exists and must never be "rolled back" onto this one.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CNIError, ErrorCode
from .routeplan import UplinkSnapshot
from .statefile import read_json, write_json

log = logging.getLogger(__name__)

JOURNAL_NAME = "uplink.json"
LOCK_NAME = "uplink.lock"
VERSION = 1

# Phases. IN_PROGRESS/ROLLING_BACK/RESTORING mean "interrupted" when found by a process
# that holds the lock: the process that wrote them died mid-way.
IN_PROGRESS = "in_progress"
DONE = "done"
PRECONFIGURED = "preconfigured"
ROLLING_BACK = "rolling_back"
ROLLED_BACK = "rolled_back"
RESTORING = "restoring"
RESTORED = "restored"
INTERRUPTED = (IN_PROGRESS, ROLLING_BACK, RESTORING)


@dataclass
class Journal:
    bridge: str
    uplink: str
    spec: str
    phase: str
    snapshot: UplinkSnapshot | None = None
    steps: list[str] = field(default_factory=list)
    state: dict[str, Any] | None = None
    error: str | None = None
    boot_id: str = ""
    netns: int = 0
    updated_at: float = 0.0
    # ifindex of the link we last made the bridge's port (the snapshot's until a re-created
    # NIC is re-enslaved): an unenslaved uplink with this index was released on purpose.
    port_ifindex: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "bridge": self.bridge,
            "uplink": self.uplink,
            "spec": self.spec,
            "phase": self.phase,
            "snapshot": self.snapshot.to_dict() if self.snapshot else None,
            "steps": list(self.steps),
            "state": self.state,
            "error": self.error,
            "boot_id": self.boot_id,
            "netns": self.netns,
            "updated_at": self.updated_at,
            "port_ifindex": self.port_ifindex,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Journal:
        snap = data.get("snapshot")
        return cls(
            bridge=str(data["bridge"]),
            uplink=str(data["uplink"]),
            spec=str(data.get("spec", data["uplink"])),
            phase=str(data["phase"]),
            snapshot=UplinkSnapshot.from_dict(snap) if snap else None,
            steps=[str(s) for s in data.get("steps", [])],
            state=data.get("state"),
            error=data.get("error"),
            boot_id=str(data.get("boot_id", "")),
            netns=int(data.get("netns", 0)),
            updated_at=float(data.get("updated_at", 0.0)),
            # Advisory (tells a released port from a re-created one): ignored if ill-typed.
            port_ifindex=cls._ifindex_or_none(data.get("port_ifindex")),
        )

    def port_index(self) -> int | None:
        """ifindex of the bridge port we made of the uplink (see ``port_ifindex``)."""
        if self.port_ifindex is not None:
            return self.port_ifindex
        return self.snapshot.ifindex if self.snapshot is not None else None

    @staticmethod
    def _ifindex_or_none(value: object) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        return None

    def belongs_here(self) -> bool:
        """Written during this boot, in this network namespace."""
        return self.boot_id == boot_id() and self.netns == netns_inode()


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def journal_path(state_dir: Path) -> Path:
    return state_dir / JOURNAL_NAME


def load(state_dir: Path) -> Journal | None:
    data = read_json(journal_path(state_dir))
    if data is None:
        return None
    try:
        return Journal.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        log.error("ignoring unreadable uplink journal %s: %s", journal_path(state_dir), exc)
        return None


def save(state_dir: Path, journal: Journal) -> None:
    journal.updated_at = time.time()
    if not journal.boot_id:
        journal.boot_id = boot_id()
        journal.netns = netns_inode()
    write_json(journal_path(state_dir), journal.to_dict())


def archive(state_dir: Path, reason: str) -> Path | None:
    """Move the journal aside (kept for inspection); returns where it went."""
    src = journal_path(state_dir)
    if not src.exists():
        return None
    dst = src.with_name(f"{JOURNAL_NAME}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}.old")
    os.replace(src, dst)
    log.warning("archived uplink journal as %s: %s", dst.name, reason)
    return dst


@contextmanager
def locked(state_dir: Path, timeout: float) -> Iterator[None]:
    """Hold the node-wide takeover lock (flock, so a dead holder releases it)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            if time.monotonic() >= deadline:
                raise CNIError(
                    ErrorCode.TRY_AGAIN_LATER,
                    f"timed out after {timeout:g}s waiting for the uplink lock "
                    f"{state_dir / LOCK_NAME}",
                    "another process is taking over or restoring the uplink",
                )
            time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # closing the only fd of the open file description drops the flock
