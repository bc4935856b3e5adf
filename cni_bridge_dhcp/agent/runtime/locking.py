"""``flock`` with a timeout: the uplink journal's lock and the xtables lock.

flock(2) has no timeout of its own; a blocking flock in a worker thread could not be
given up on. A non-blocking attempt is retried every 20 ms until the deadline instead.
"""

from __future__ import annotations

import fcntl
import time

POLL_INTERVAL = 0.02


def flock_with_timeout(fd: int, timeout: float) -> bool:
    """Take an exclusive flock on ``fd`` within ``timeout`` seconds; False if it stayed held.

    The lock is released by closing ``fd`` (or by ``flock(fd, LOCK_UN)``).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL)
