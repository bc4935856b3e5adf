"""Reading and writing ``/proc/sys`` knobs of the calling thread's network namespace.

Paths are relative to ``/proc/sys`` (``net/ipv6/conf/eth0/accept_ra``). Three ways to
write, because callers differ in what a failure means: the bridge and uplink settings are
best effort (IPv6 may be disabled on the node), a pod knob may legitimately be missing
(IPv6 off in the pod) but must not fail otherwise, and IP forwarding is required.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

PROC_SYS = Path("/proc/sys")


def read_sysctl(path: str) -> str | None:
    """The knob's value, or None when it cannot be read (missing, IPv6 off, ...)."""
    try:
        return (PROC_SYS / path).read_text().strip()
    except OSError:
        return None


def write_sysctl(path: str, value: str) -> bool:
    """Best effort, like the reference plugin: False (logged at debug) on any OSError."""
    try:
        (PROC_SYS / path).write_text(value)
        return True
    except OSError as exc:
        log.debug("sysctl %s=%s not applied: %s", path, value, exc)
        return False


def write_sysctl_if_present(path: str, value: str) -> bool:
    """False when the knob does not exist; any other OSError propagates."""
    try:
        (PROC_SYS / path).write_text(value)
    except FileNotFoundError:
        return False
    return True


def ensure_sysctl(path: str, value: str) -> str | None:
    """Set the knob to ``value`` unless it has it; return the old value when it changed.

    Raises OSError when it cannot be read or written.
    """
    current = (PROC_SYS / path).read_text().strip()
    if current == value:
        return None
    (PROC_SYS / path).write_text(value + "\n")
    return current
