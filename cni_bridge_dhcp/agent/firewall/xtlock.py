"""The xtables lock (``/run/xtables.lock``), which iptables-legacy takes and libiptc does not.

libiptc commits replace a whole table, so a change made by another iptables process
between our read and our commit would be lost. We hold the lock from the read to the
commit, like ``iptables -w`` does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from ...cni.errors import CNIError, ErrorCode
from ..runtime.locking import flock_with_timeout

DEFAULT_PATH = "/run/xtables.lock"


def lock_path() -> str:
    return os.environ.get("XTABLES_LOCKFILE") or DEFAULT_PATH


@contextmanager
def xtables_lock(timeout: float = 10.0, path: str | None = None) -> Iterator[None]:
    target = path or lock_path()
    try:
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise CNIError(
            ErrorCode.FIREWALL_FAILED,
            f"iptables: cannot open xtables lock {target}: {exc.strerror}",
        ) from exc
    try:
        if not flock_with_timeout(fd, timeout):
            raise CNIError(
                ErrorCode.TRY_AGAIN_LATER,
                f"iptables: xtables lock {target} held by another process",
                f"waited {timeout:.0f} s",
            )
        yield
    finally:
        os.close(fd)  # closing releases the flock
