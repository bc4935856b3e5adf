"""The one module that imports pyroute2 for links, addresses, routes and neighbours.

pyroute2 0.9 creates its netlink socket lazily, in whatever context its event loop runs,
so an ``IPRoute()`` built inside a setns()'d thread still talks to the process's own
namespace. We therefore create the netlink socket ourselves inside the target namespace
and hand it over with ``use_socket``.

pyroute2 ships no type information, so the handle is typed here by the few methods the
agent calls (:class:`Netlink`), and the rtnetlink constants live here by name instead of
as literals scattered over the callers. Message attribute values stay ``Any``: an nla's
type depends on its name, which is what pyroute2 itself does at run time.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .netns import run_in_netns

__all__ = [
    "EEXIST",
    "ENODEV",
    "ENOENT",
    "IFF_PROMISC",
    "IFF_UP",
    "NUD_DELAY",
    "NUD_FAILED",
    "NUD_NOARP",
    "NUD_PERMANENT",
    "NUD_REACHABLE",
    "NUD_STALE",
    "RTPROT_BOOT",
    "RTPROT_KERNEL",
    "RTPROT_RA",
    "RTPROT_STATIC",
    "RT_SCOPE_HOST",
    "RT_SCOPE_LINK",
    "RT_SCOPE_UNIVERSE",
    "RT_TABLE_LOCAL",
    "RT_TABLE_MAIN",
    "LinkEvents",
    "Message",
    "Netlink",
    "NetlinkError",
    "describe",
    "get_link",
    "ipr_for_netns",
    "link_events",
    "link_kind",
    "link_name",
    "lookup",
    "netns_ipr",
    "node_ipr",
    "tolerate",
]

# linux/if.h
IFF_UP = 0x1
IFF_PROMISC = 0x100
# linux/rtnetlink.h
RTMGRP_LINK = 0x1
RTPROT_KERNEL = 2
RTPROT_BOOT = 3
RTPROT_STATIC = 4
RTPROT_RA = 9
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254
RT_TABLE_MAIN = 254
RT_TABLE_LOCAL = 255
# linux/neighbour.h
NUD_REACHABLE = 0x02
NUD_STALE = 0x04
NUD_DELAY = 0x08
NUD_FAILED = 0x20
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
# The errno values netlink answers with, by name (NetlinkError.code).
EEXIST = errno.EEXIST
ENOENT = errno.ENOENT
ENODEV = errno.ENODEV

_RCVBUF = 1024 * 1024
_EVENT_BUF = 32 * 1024  # one recv: many link messages, below malloc's mmap threshold


class Message(Protocol):
    """A parsed netlink message (ifinfmsg, ifaddrmsg, rtmsg, ndmsg, or an nla inside one)."""

    def __getitem__(self, key: str) -> Any: ...

    def get(self, key: str, default: Any = None) -> Any: ...

    def get_attr(self, name: str, default: Any = None) -> Any: ...


class Netlink(Protocol):
    """The methods of pyroute2's ``IPRoute`` the agent uses (pyroute2 has no stubs)."""

    def link(self, command: str, **kwargs: Any) -> Sequence[Message]: ...

    def addr(self, command: str, **kwargs: Any) -> Sequence[Message]: ...

    def route(self, command: str, **kwargs: Any) -> Sequence[Message]: ...

    def neigh(self, command: str, **kwargs: Any) -> Sequence[Message]: ...

    def brport(self, command: str, **kwargs: Any) -> Sequence[Message]: ...

    def link_lookup(self, **kwargs: Any) -> list[int]: ...

    def get_links(self, *indexes: int, **kwargs: Any) -> Sequence[Message]: ...

    def get_addr(self, **kwargs: Any) -> Sequence[Message]: ...

    def get_routes(self, **kwargs: Any) -> Sequence[Message]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Netlink: ...

    def __exit__(self, *exc_info: object) -> None: ...


class LinkEvents(Protocol):
    """A subscription to the node's link events (:func:`link_events`)."""

    def fileno(self) -> int: ...

    def get(self) -> Sequence[Mapping[str, str]]: ...

    def close(self) -> None: ...


# linux/rtnetlink.h message types, by the names pyroute2 gives them ("event")
_LINK_EVENTS = {16: "RTM_NEWLINK", 17: "RTM_DELLINK"}
_NLMSG_HDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid


class _RawLinkEvents:
    """RTM_NEWLINK/RTM_DELLINK headers straight off a netlink socket.

    Not a pyroute2 handle: its event loop pulls every waiting datagram off the socket into
    a queue while one get() returns one of them, so the fd looks idle and the rest stay
    queued for ever (each pinned in a 4 KiB mapping: recvfrom(256 KiB) shrunk in place);
    the agent's RSS grew ~20 KiB per pod cycle (issue 16). get() here drains the socket.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def get(self) -> list[dict[str, str]]:
        """Every event waiting now (no wait); OSError (e.g. ENOBUFS after an overrun)
        reaches the caller, which resubscribes."""
        out: list[dict[str, str]] = []
        while True:
            try:
                data = self._sock.recv(_EVENT_BUF, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return out
            offset = 0
            while offset + _NLMSG_HDR.size <= len(data):
                length, kind, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, offset)
                if length < _NLMSG_HDR.size:
                    break
                out.append({"event": _LINK_EVENTS.get(kind, str(kind))})
                offset += (length + 3) & ~3

    def close(self) -> None:
        self._sock.close()


def link_events() -> LinkEvents:
    """A node subscription to RTM_NEWLINK/RTM_DELLINK (poll its fileno, then get())."""
    sock = _netlink_socket()
    try:
        sock.bind((0, RTMGRP_LINK))
    except BaseException:
        sock.close()
        raise
    return _RawLinkEvents(sock)


def _netlink_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
    return sock


def ipr_for_netns(netns_fd: int) -> Netlink:
    """A handle whose socket lives in the namespace ``netns_fd`` (caller closes it)."""
    sock = run_in_netns(netns_fd, _netlink_socket)
    ipr: Netlink = IPRoute(use_socket=sock)
    return ipr


def node_ipr() -> Netlink:
    """A handle on the agent's own (node) namespace (caller closes it)."""
    ipr: Netlink = IPRoute(use_socket=_netlink_socket())
    return ipr


@contextmanager
def netns_ipr(netns_fd: int | None) -> Iterator[Netlink]:
    ipr = node_ipr() if netns_fd is None else ipr_for_netns(netns_fd)
    try:
        yield ipr
    finally:
        ipr.close()


def lookup(ipr: Netlink, name: str | None) -> int | None:
    """ifindex of the link called ``name``, or None (also for an empty name)."""
    if not name:
        return None
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def get_link(ipr: Netlink, index: int) -> Message:
    """The link ``index`` (NetlinkError ENODEV when it does not exist)."""
    return ipr.link("get", index=index)[0]


def link_name(ipr: Netlink, index: int) -> str:
    """The name of link ``index``, or "ifindex N" when it is gone (for messages)."""
    try:
        return str(get_link(ipr, index).get_attr("IFLA_IFNAME"))
    except NetlinkError:
        return f"ifindex {index}"


def link_kind(link: Message) -> tuple[str | None, dict[str, Any]]:
    """(IFLA_INFO_KIND, IFLA_INFO_DATA attributes) of a link; (None, {}) for a physical one."""
    info = link.get_attr("IFLA_LINKINFO")
    if not info:
        return None, {}
    kind = info.get_attr("IFLA_INFO_KIND")
    data = info.get_attr("IFLA_INFO_DATA")
    attrs: dict[str, Any] = dict(data["attrs"]) if data else {}
    return kind, attrs


@contextmanager
def tolerate(*codes: int) -> Iterator[None]:
    """Swallow a NetlinkError whose errno is one of ``codes`` (EEXIST on add, ENOENT on del)."""
    try:
        yield
    except NetlinkError as exc:
        if exc.code not in codes:
            raise


def describe(exc: BaseException) -> str:
    """A NetlinkError as "<message> (errno N)"; any other exception as its text."""
    if isinstance(exc, NetlinkError) and len(exc.args) > 1:
        return f"{exc.args[1]} (errno {exc.code})"
    return str(exc) or type(exc).__name__
