"""Raw rtnetlink for the agent's per-operation hot paths: link events, link get and delete.

pyroute2 (0.9.7) costs about 0.5 ms of CPU to build a handle and 0.8 ms per request (an
asyncio loop, request processors and a generic decoder per message; measured with
``scripts/perf-agent.py``), and the agent made a dozen such requests per ADD and DEL, plus
a full decode of every link event on the node. A link lookup or delete is one 32-byte
request and a struct unpack of the answer: here it costs a few microseconds, and the
kernel's own work (a veth delete waits for RCU) is all that is left.

Only the plain, fixed-layout messages live here (ifinfomsg + flat attributes, one nested
kind); anything richer stays with pyroute2 in :mod:`.netlink`.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
RTMGRP_LINK = 0x1
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
IFLA_PERM_ADDRESS = 54
NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED / NLA_F_NET_BYTEORDER

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFI = struct.Struct("=BxHiII")  # ifinfomsg: family, pad, type, index, flags, change
_NLA = struct.Struct("=HH")  # rtattr: len, type
_ERR = struct.Struct("=i")
_RCVBUF = 1024 * 1024


class RtnlError(OSError):
    """The kernel refused a request (``errno`` is its error code)."""


@dataclass(frozen=True)
class Link:
    """One RTM_NEWLINK / RTM_DELLINK message, the attributes the agent reads."""

    event: int
    index: int
    name: str | None = None
    address: str | None = None
    perm_address: str | None = None
    master: int | None = None
    mtu: int | None = None
    kind: str | None = None


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attrs(data: bytes, start: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = start
    while pos + _NLA.size <= end:
        length, kind = _NLA.unpack_from(data, pos)
        if length < _NLA.size or pos + length > end:
            break
        out.setdefault(kind & NLA_TYPE_MASK, data[pos + _NLA.size : pos + length])
        pos += _align(length)
    return out


def _mac(raw: bytes | None) -> str | None:
    return ":".join(f"{b:02x}" for b in raw) if raw else None


def _text(raw: bytes | None) -> str | None:
    return raw.split(b"\0", 1)[0].decode(errors="replace") if raw is not None else None


def _u32(raw: bytes | None) -> int | None:
    return int.from_bytes(raw[:4], "little") if raw is not None and len(raw) >= 4 else None


def _link(msg_type: int, data: bytes, start: int, end: int) -> Link:
    _, _, index, _, _ = _IFI.unpack_from(data, start)
    attrs = _attrs(data, start + _IFI.size, end)
    kind = None
    info = attrs.get(IFLA_LINKINFO)
    if info is not None:
        kind = _text(_attrs(info, 0, len(info)).get(IFLA_INFO_KIND))
    return Link(
        event=msg_type,
        index=index,
        name=_text(attrs.get(IFLA_IFNAME)),
        address=_mac(attrs.get(IFLA_ADDRESS)),
        perm_address=_mac(attrs.get(IFLA_PERM_ADDRESS)),
        master=_u32(attrs.get(IFLA_MASTER)) or None,
        mtu=_u32(attrs.get(IFLA_MTU)),
        kind=kind,
    )


def parse(data: bytes) -> list[tuple[int, int, Link | int]]:
    """(type, seq, Link or errno) of each link or error message in one netlink datagram;
    errno 0 is an ACK. Other message types are skipped."""
    out: list[tuple[int, int, Link | int]] = []
    pos = 0
    while pos + _HDR.size <= len(data):
        length, msg_type, _, seq, _ = _HDR.unpack_from(data, pos)
        if length < _HDR.size or pos + length > len(data):
            break
        body = pos + _HDR.size
        if msg_type in (RTM_NEWLINK, RTM_DELLINK) and length >= _HDR.size + _IFI.size:
            out.append((msg_type, seq, _link(msg_type, data, body, pos + length)))
        elif msg_type == NLMSG_ERROR and length >= _HDR.size + _ERR.size:
            out.append((msg_type, seq, -_ERR.unpack_from(data, body)[0]))
        pos += _align(length)
    return out


def new_socket(groups: int = 0) -> socket.socket:
    """An rtnetlink socket in the calling thread's namespace (bound to ``groups``)."""
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
    )
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        sock.bind((0, groups))
    except BaseException:
        sock.close()
        raise
    return sock


class LinkEventSocket:
    """Subscribed to RTMGRP_LINK; :meth:`read` drains what arrived (poll :meth:`fileno`).

    An overrun (ENOBUFS) raises OSError: events were lost, the caller resubscribes."""

    def __init__(self) -> None:
        self._sock = new_socket(RTMGRP_LINK)
        self._sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> list[Link]:
        links: list[Link] = []
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return links
            links.extend(item for _, _, item in parse(data) if isinstance(item, Link))

    def close(self) -> None:
        self._sock.close()


class Rtnl:
    """Request/answer on one rtnetlink socket (one thread at a time; close it after use).

    ``sock`` is a socket made elsewhere (e.g. inside a pod namespace by a setns()'d
    thread: a socket keeps the namespace it was created in)."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self._sock = sock if sock is not None else new_socket()
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(self, msg_type: int, flags: int, index: int, name: str | None) -> Link | int:
        self._seq += 1
        attrs = b""
        if name is not None:
            raw = name.encode() + b"\0"
            attrs = _NLA.pack(_NLA.size + len(raw), IFLA_IFNAME) + raw
            attrs += b"\0" * (_align(len(attrs)) - len(attrs))
        body = _IFI.pack(socket.AF_UNSPEC, 0, index, 0, 0) + attrs
        header = _HDR.pack(_HDR.size + len(body), msg_type, NLM_F_REQUEST | flags, self._seq, 0)
        self._sock.sendto(header + body, (0, 0))
        while True:
            for _, seq, item in parse(self._sock.recv(65536)):
                if seq == self._seq:
                    return item

    def get_link(self, *, index: int = 0, name: str | None = None) -> Link | None:
        """The link by index or name; None when there is none (any refusal: pyroute2's
        ``link_lookup`` answers [] alike, e.g. EINVAL for a name too long to exist)."""
        if not index and not name:
            return None
        item = self._request(RTM_GETLINK, 0, index, None if index else name)
        return item if isinstance(item, Link) else None

    def del_link(self, index: int) -> bool:
        """Delete link ``index``: True when deleted, False when it was already gone
        (ENODEV); any other refusal raises RtnlError."""
        item = self._request(RTM_DELLINK, NLM_F_ACK, index, None)
        code = item if isinstance(item, int) else 0
        if code == errno.ENODEV:
            return False
        if code:
            raise RtnlError(code, f"deleting link {index}: {os.strerror(code)}")
        return True
