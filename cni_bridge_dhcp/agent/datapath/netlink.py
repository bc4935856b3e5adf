"""pyroute2 handles bound to a chosen network namespace.

pyroute2 0.9 creates its netlink socket lazily, in whatever context its event loop runs,
so an ``IPRoute()`` built inside a setns()'d thread still talks to the process's own
namespace. We therefore create the netlink socket ourselves inside the target namespace
and hand it over with ``use_socket``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .netns import run_in_netns

__all__ = ["IPRoute", "NetlinkError", "ipr_for_netns", "netns_ipr", "node_ipr"]

_RCVBUF = 1024 * 1024


def _netlink_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
    return sock


def ipr_for_netns(netns_fd: int) -> IPRoute:
    """An IPRoute whose socket lives in the namespace ``netns_fd`` (caller closes it)."""
    sock = run_in_netns(netns_fd, _netlink_socket)
    return IPRoute(use_socket=sock)


def node_ipr() -> IPRoute:
    """An IPRoute on the agent's own (node) namespace."""
    return IPRoute(use_socket=_netlink_socket())


@contextmanager
def netns_ipr(netns_fd: int | None) -> Iterator[IPRoute]:
    ipr = node_ipr() if netns_fd is None else ipr_for_netns(netns_fd)
    try:
        yield ipr
    finally:
        ipr.close()
