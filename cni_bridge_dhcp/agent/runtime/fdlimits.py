"""The agent's file-descriptor budget: the open-file limit, the bound on concurrent
connections derived from it, and which errors mean "out of descriptors, try again".

Each ADD waiting on DHCP holds ~5 descriptors (its connection, the pod netns, the DHCP
packet/ARP/control sockets), plus a netlink socket while a worker thread configures links.
Under systemd's default soft limit of 1024, ~200 concurrent ADDs used to exhaust it; the
agent then failed ADDs with 999 and could not undo what it had made.
"""

from __future__ import annotations

import errno
import logging
import resource

log = logging.getLogger(__name__)

# accept() errors that say "not now" (out of descriptors or memory, or the client left
# before we took it): shed load and carry on, never stop serving.
TRANSIENT_ACCEPT_ERRNOS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED}
)
_EXHAUSTION_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})

# Descriptors one connection may hold at its peak (see the module docstring), with room.
FDS_PER_CONNECTION = 8
# Descriptors the agent keeps for itself: listening socket, logs, state files, epoll,
# thread pool, firewall and netlink handles, lease renewals and the start-up cleanup.
RESERVED_FDS = 48
MIN_CONNECTIONS = 4
MAX_CONNECTIONS = 1024


def raise_nofile() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns (soft before, soft now)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        # Linux never reports an infinite NOFILE hard limit; be safe on others.
        hard = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else soft
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft, soft
    log.info("raised the open-file limit (RLIMIT_NOFILE) from %d to %d, the hard limit", soft, hard)
    return soft, hard


def default_max_connections(soft_limit: int | None = None) -> int:
    """How many connections the agent serves at once under ``soft_limit`` descriptors."""
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    budget = (soft_limit - RESERVED_FDS) // FDS_PER_CONNECTION
    return max(MIN_CONNECTIONS, min(MAX_CONNECTIONS, budget))


def is_fd_exhaustion(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is EMFILE/ENFILE."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _EXHAUSTION_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False
