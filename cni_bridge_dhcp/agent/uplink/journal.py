"""The uplink takeover journal and the node-wide lock that serialises takeovers.

The journal (``<state_dir>/uplink.json``) holds the snapshot of the uplink taken before
anything changed, and the name of every step as it begins. It is replaced atomically
(write-temp, fsync, rename, fsync dir), so after a crash it shows either the previous or
the new record, never a torn one. It also records the boot and the network namespace it
belongs to: a journal left over from before a reboot, or from another namespace, describes
a world that no longer exists and must never be "rolled back" onto this one.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...cni.defaults import UPLINK_JOURNAL
from ...cni.errors import CNIError, ErrorCode
from ..runtime.locking import flock_with_timeout
from ..state.statefile import ShapeError, read_json, read_trusted, write_json
from .plan import UplinkSnapshot

log = logging.getLogger(__name__)

JOURNAL_NAME = UPLINK_JOURNAL
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
        """Rebuild a journal; ShapeError naming the first field that is wrong."""
        for name in ("bridge", "uplink", "phase"):
            if not isinstance(data.get(name), str):
                raise ShapeError(name, "is missing or not a string")
        if not isinstance(data.get("spec", ""), str):
            raise ShapeError("spec", "is not a string")
        steps = data.get("steps", [])
        if not isinstance(steps, list) or not all(isinstance(x, str) for x in steps):
            raise ShapeError("steps", "is not a list of strings")
        state = data.get("state")
        if state is not None and not isinstance(state, dict):
            raise ShapeError("state", "is not an object")
        error = data.get("error")
        if error is not None and not isinstance(error, str):
            raise ShapeError("error", "is not a string")
        _check_scalars(data, {"boot_id": str, "netns": int, "updated_at": float}, "")
        snap = data.get("snapshot")
        if snap is not None:
            if not isinstance(snap, dict):
                raise ShapeError("snapshot", "is not an object")
            check_snapshot(snap)
        try:
            snapshot = UplinkSnapshot.from_dict(snap) if snap else None
        except (KeyError, TypeError, ValueError) as exc:
            raise ShapeError("snapshot", f"does not load: {exc}") from None
        return cls(
            bridge=str(data["bridge"]),
            uplink=str(data["uplink"]),
            spec=str(data.get("spec", data["uplink"])),
            phase=str(data["phase"]),
            snapshot=snapshot,
            steps=[str(s) for s in steps],
            state=state,
            error=error,
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


def _check_scalars(data: dict[str, Any], kinds: dict[str, type], where: str) -> None:
    """Each present, non-null key of ``kinds`` has that type (an int is a float too)."""
    for name, kind in kinds.items():
        value = data.get(name)
        if value is None:
            continue
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            raise ShapeError(f"{where}{name}", f"is not {kind.__name__}")


def _check_list(data: dict[str, Any], name: str, kinds: dict[str, type], where: str) -> None:
    items = data.get(name, [])
    if not isinstance(items, list):
        raise ShapeError(f"{where}{name}", "is not a list")
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise ShapeError(f"{where}{name}[{n}]", "is not an object")
        _check_scalars(item, kinds, f"{where}{name}[{n}].")


_ADDR = {"family": int, "address": str, "prefixlen": int, "scope": int, "flags": int,
         "label": str, "peer": str, "broadcast": str, "valid_lft": int, "preferred_lft": int,
         "proto": int, "rt_priority": int}  # fmt: skip
_ROUTE = {"family": int, "dst": str, "dst_len": int, "table": int, "proto": int, "scope": int,
          "type": int, "flags": int, "priority": int, "tos": int, "gateway": str, "dev": str,
          "prefsrc": str, "src": str}  # fmt: skip


def check_snapshot(snap: dict[str, Any]) -> None:
    """The snapshot's fields have the types the restore code relies on."""
    for name in ("uplink", "mac"):
        if not isinstance(snap.get(name), str):
            raise ShapeError(f"snapshot.{name}", "is missing or not a string")
    for name in ("ifindex", "mtu"):
        value = snap.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ShapeError(f"snapshot.{name}", "is missing or not an integer")
    _check_scalars(snap, {"up": bool, "accept_ra": str, "autoconf": str, "taken_at": float},
                   "snapshot.")  # fmt: skip
    _check_list(snap, "addresses", _ADDR, "snapshot.")
    for n, addr in enumerate(snap.get("addresses", [])):
        for name in ("family", "address", "prefixlen"):
            if name not in addr:
                raise ShapeError(f"snapshot.addresses[{n}].{name}", "is missing")
        try:
            ipaddress.ip_address(addr["address"])
        except ValueError:
            raise ShapeError(f"snapshot.addresses[{n}].address", "is not an address") from None
    _check_list(snap, "routes", _ROUTE, "snapshot.")
    _check_list(snap, "neighbours", {"family": int, "dst": str, "lladdr": str}, "snapshot.")
    pre = snap.get("bridge_pre")
    if pre is not None:
        if not isinstance(pre, dict):
            raise ShapeError("snapshot.bridge_pre", "is not an object")
        _check_scalars(pre, {"ifindex": int, "mac": str, "mtu": int, "accept_ra": str,
                             "accept_dad": str}, "snapshot.bridge_pre.")  # fmt: skip


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def journal_path(state_dir: Path) -> Path:
    return state_dir / JOURNAL_NAME


def load(state_dir: Path, *, strict: bool = False) -> Journal | None:
    """The journal, or None when there is none.

    An unreadable one (torn, or of the wrong shape) is logged loudly and left in place: it
    may be the only record of the node's pre-takeover uplink configuration, for `uplink
    restore` and `doctor` to show. Nothing acts on it: with ``strict`` (taking the uplink
    over, restoring it) it is a CNIError 102 naming the file and the field, so no takeover
    ever replaces or archives it; otherwise (start-up recovery, status) None.
    """
    path = journal_path(state_dir)
    data = read_json(path)
    problem: str | None = None
    if data is None:
        if read_trusted(path) is not None:
            problem = "not a JSON object"  # torn, or hand-edited: read_json logged it
    else:
        try:
            return Journal.from_dict(data)
        except ShapeError as exc:
            problem = str(exc)
    if problem is None:
        return None
    log.error(
        "UPLINK JOURNAL %s IS UNREADABLE (%s): it may hold the only record of the uplink's "
        "configuration before the takeover. It is kept as it is and nothing is done with "
        "it: inspect it (cni-bridge-dhcp doctor), put the node's uplink right, then move it away",
        path,
        problem,
    )
    if strict:
        raise CNIError(
            ErrorCode.UPLINK_FAILED,
            f"uplink journal {path} is unreadable ({problem})",
            "it may hold the only record of the uplink's configuration before the takeover, "
            "so the agent neither takes the uplink over nor restores it while it is there; "
            "inspect it (cni-bridge-dhcp doctor), put the node's uplink right, then move it away",
        )
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
        if not flock_with_timeout(fd, timeout):
            raise CNIError(
                ErrorCode.TRY_AGAIN_LATER,
                f"timed out after {timeout:g}s waiting for the uplink lock {state_dir / LOCK_NAME}",
                "another process is taking over or restoring the uplink",
            )
        yield
    finally:
        os.close(fd)  # closing the only fd of the open file description drops the flock
