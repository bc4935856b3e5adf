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
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .netns import run_in_netns

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_GETROUTE = 26
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
IFF_UP = 0x1
RTMGRP_LINK = 0x1
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_AF_SPEC = 26
IFLA_INET6_FLAGS = 1
IFLA_INFO_KIND = 1
IFLA_PERM_ADDRESS = 54
IFLA_GROUP = 27
IFLA_NET_NS_FD = 28
IFLA_EXT_MASK = 29
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
NLA_F_NESTED = 0x8000
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_FLAGS = 8
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_TABLE = 15
RTPROT_STATIC = 4
RTN_UNICAST = 1
RT_TABLE_MAIN = 254
SOL_NETLINK = 270
NETLINK_GET_STRICT_CHK = 12
NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED / NLA_F_NET_BYTEORDER

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFI = struct.Struct("=BxHiII")  # ifinfomsg: family, pad, type, index, flags, change
_IFA = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTM = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst/src len, tos, table, proto, scope, type
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
    group: int | None = None
    af_spec: bytes | None = field(default=None, repr=False)  # IFLA_AF_SPEC, raw: inet6_flags()


@dataclass(frozen=True)
class Addr:
    """One RTM_NEWADDR message (``flags``: IFA_FLAGS when present, else ifa_flags)."""

    family: int
    prefixlen: int
    flags: int
    scope: int
    index: int
    address: str | None


@dataclass(frozen=True)
class Route:
    """One RTM_NEWROUTE message (``table``: RTA_TABLE when present, else rtm_table)."""

    family: int
    dst_len: int
    table: int
    proto: int
    scope: int
    oif: int | None
    dst: str | None
    gateway: str | None


Item = Link | Addr | Route | int


def _ip(raw: bytes | None) -> str | None:
    return str(ipaddress.ip_address(raw)) if raw is not None and len(raw) in (4, 16) else None


def _addr(data: bytes, start: int, end: int) -> Addr:
    family, prefixlen, flags, scope, index = _IFA.unpack_from(data, start)
    attrs = _attrs(data, start + _IFA.size, end)
    return Addr(
        family=family,
        prefixlen=prefixlen,
        flags=_u32(attrs.get(IFA_FLAGS)) or flags,
        scope=scope,
        index=index,
        address=_ip(attrs.get(IFA_ADDRESS)),
    )


def _route(data: bytes, start: int, end: int) -> Route:
    family, dst_len, _, _, table, proto, scope, _, _ = _RTM.unpack_from(data, start)
    attrs = _attrs(data, start + _RTM.size, end)
    return Route(
        family=family,
        dst_len=dst_len,
        table=_u32(attrs.get(RTA_TABLE)) or table,
        proto=proto,
        scope=scope,
        oif=_u32(attrs.get(RTA_OIF)),
        dst=_ip(attrs.get(RTA_DST)),
        gateway=_ip(attrs.get(RTA_GATEWAY)),
    )


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attrs(
    data: bytes, start: int, end: int, wanted: frozenset[int] | None = None
) -> dict[int, bytes]:
    """The attributes in ``data[start:end]`` by type (the first of each), only the
    ``wanted`` ones if given. A link message carries ~40 (stats, queues, ...) and the
    agent reads about 8: copying only those halves the cost of the walk, which ran for
    every link of every dump and every link event (rtnl parsing was the agent's top CPU
    item with 50 pods)."""
    out: dict[int, bytes] = {}
    pos = start
    unpack = _NLA.unpack_from
    while pos + 4 <= end:
        length, kind = unpack(data, pos)
        if length < 4 or pos + length > end:
            break
        kind &= NLA_TYPE_MASK
        if (wanted is None or kind in wanted) and kind not in out:
            out[kind] = data[pos + 4 : pos + length]
            if wanted is not None and len(out) == len(wanted):
                break  # the rest is not read
        pos += (length + 3) & ~3
    return out


def nla(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    raw = _NLA.pack(_NLA.size + len(payload), kind) + payload
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def _nla_str(kind: int, text: str) -> bytes:
    return nla(kind, text.encode() + b"\0")


def _nla_u32(kind: int, value: int) -> bytes:
    return nla(kind, struct.pack("=I", value))


def _mac(raw: bytes | None) -> str | None:
    return ":".join(f"{b:02x}" for b in raw) if raw else None


def _text(raw: bytes | None) -> str | None:
    return raw.split(b"\0", 1)[0].decode(errors="replace") if raw is not None else None


def _u32(raw: bytes | None) -> int | None:
    return int.from_bytes(raw[:4], "little") if raw is not None and len(raw) >= 4 else None


_LINK_ATTRS = frozenset(
    {
        IFLA_IFNAME,
        IFLA_ADDRESS,
        IFLA_PERM_ADDRESS,
        IFLA_MASTER,
        IFLA_MTU,
        IFLA_LINKINFO,
        IFLA_GROUP,
        IFLA_AF_SPEC,
    }
)


_GROUP_ONLY = frozenset({IFLA_GROUP})
_EVENT_ATTRS = frozenset({IFLA_IFNAME, IFLA_ADDRESS, IFLA_PERM_ADDRESS})
_NAME_ONLY = frozenset({IFLA_IFNAME})


def _link(msg_type: int, data: bytes, start: int, end: int) -> Link:
    _, _, index, _, _ = _IFI.unpack_from(data, start)
    attrs = _attrs(data, start + _IFI.size, end, _LINK_ATTRS)
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
        group=_u32(attrs.get(IFLA_GROUP)),
        af_spec=attrs.get(IFLA_AF_SPEC),
    )


def inet6_flags(link: Link) -> int:
    """The link's IFLA_INET6_FLAGS (IF_RA_RCVD, IF_RA_MANAGED...); 0 when it has none."""
    if link.af_spec is None:
        return 0
    inet6 = _attrs(link.af_spec, 0, len(link.af_spec)).get(socket.AF_INET6)
    if inet6 is None:
        return 0
    return _u32(_attrs(inet6, 0, len(inet6)).get(IFLA_INET6_FLAGS)) or 0


def _messages(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(type, seq, body start, end) of each message in one netlink datagram."""
    pos = 0
    while pos + _HDR.size <= len(data):
        length, msg_type, _, seq, _ = _HDR.unpack_from(data, pos)
        if length < _HDR.size or pos + length > len(data):
            break
        yield msg_type, seq, pos + _HDR.size, pos + length
        pos += _align(length)


def _item(msg_type: int, data: bytes, body: int, end: int) -> Item | None:
    size = end - body
    if msg_type in (RTM_NEWLINK, RTM_DELLINK) and size >= _IFI.size:
        return _link(msg_type, data, body, end)
    if msg_type == RTM_NEWADDR and size >= _IFA.size:
        return _addr(data, body, end)
    if msg_type == RTM_NEWROUTE and size >= _RTM.size:
        return _route(data, body, end)
    if msg_type == NLMSG_ERROR and size >= _ERR.size:
        return int(-_ERR.unpack_from(data, body)[0])
    if msg_type == NLMSG_DONE:
        return 0
    return None


def parse(data: bytes) -> list[tuple[int, int, Item]]:
    """(type, seq, item) of each message in one netlink datagram: a Link, Addr or Route, or
    for NLMSG_ERROR its errno (0 is an ACK) and for NLMSG_DONE 0. Other types are skipped."""
    out: list[tuple[int, int, Item]] = []
    for msg_type, seq, body, end in _messages(data):
        item = _item(msg_type, data, body, end)
        if item is not None:
            out.append((msg_type, seq, item))
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


class Subscription:
    """A non-blocking rtnetlink socket bound to multicast ``groups``, in the namespace
    ``netns_fd`` (None: the caller's); poll :meth:`fileno`.

    ``_pending`` drains what arrived. An overrun (ENOBUFS) raises OSError: announcements
    were lost."""

    def __init__(self, groups: int, netns_fd: int | None = None) -> None:
        if netns_fd is None:
            self._sock = new_socket(groups)
        else:
            self._sock = run_in_netns(netns_fd, lambda: new_socket(groups))
        self._sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def _pending(self) -> Iterator[tuple[int, bytes, int, int]]:
        """(message type, datagram, body start, end) of each message that arrived."""
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return
            for msg_type, _, body, end in _messages(data):
                yield msg_type, data, body, end

    def close(self) -> None:
        self._sock.close()


class LinkEventSocket(Subscription):
    """Subscribed to RTMGRP_LINK; :meth:`read` drains what arrived (the caller resubscribes
    after an overrun)."""

    def __init__(self) -> None:
        super().__init__(RTMGRP_LINK)

    def read(self, needles: Sequence[bytes] = ()) -> list[Link]:
        """The links that changed, with only their name and addresses: every ADD and DEL
        brings a dozen events about pod veths, each read here. With ``needles``, only
        messages holding one of them somewhere (a name's bytes, a MAC's) are decoded: a
        byte search costs far less than walking each message's attributes."""
        links: list[Link] = []
        for msg_type, data, body, end in self._pending():
            if msg_type in (RTM_NEWLINK, RTM_DELLINK) and end - body >= _IFI.size:
                if needles and all(data.find(n, body, end) < 0 for n in needles):
                    continue
                index = _IFI.unpack_from(data, body)[2]
                attrs = _attrs(data, body + _IFI.size, end, _EVENT_ATTRS)
                links.append(
                    Link(
                        event=msg_type,
                        index=index,
                        name=_text(attrs.get(IFLA_IFNAME)),
                        address=_mac(attrs.get(IFLA_ADDRESS)),
                        perm_address=_mac(attrs.get(IFLA_PERM_ADDRESS)),
                    )
                )
        return links


class LinkRemovals(Subscription):
    """Subscribed to RTMGRP_LINK; :meth:`read` gives the names of links removed since.

    The kernel announces a removed link (RTM_DELLINK, family AF_UNSPEC) once the link and,
    for a veth, its peer are out of their namespaces, and only then waits out RCU grace
    periods before it answers the delete itself (~0.7 ms against ~19 ms here). A bridge
    port's own AF_BRIDGE RTM_DELLINK (``nomaster``) is not a removal and is skipped."""

    def __init__(self) -> None:
        super().__init__(RTMGRP_LINK)

    def read(self) -> list[str]:
        names: list[str] = []
        for msg_type, data, body, end in self._pending():
            if msg_type != RTM_DELLINK or end - body < _IFI.size:
                continue
            if _IFI.unpack_from(data, body)[0] != socket.AF_UNSPEC:
                continue
            name = _text(_attrs(data, body + _IFI.size, end, _NAME_ONLY).get(IFLA_IFNAME))
            if name:
                names.append(name)
        return names


# A dump of every link, without the counters (IFLA_STATS*: half of each answer).
_LINKS_BODY = _IFI.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _nla_u32(
    IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS
)


class Rtnl:
    """Request/answer on one rtnetlink socket (one thread at a time; close it after use).

    ``sock`` is a socket made elsewhere (e.g. inside a pod namespace by a setns()'d
    thread: a socket keeps the namespace it was created in)."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self._sock = sock if sock is not None else new_socket()
        self._seq = 0
        self._strict_ok: bool | None = None

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, msg_type: int, flags: int, body: bytes) -> int:
        self._seq += 1
        header = _HDR.pack(_HDR.size + len(body), msg_type, NLM_F_REQUEST | flags, self._seq, 0)
        self._sock.sendto(header + body, (0, 0))
        return self._seq

    def _request(self, msg_type: int, flags: int, index: int, name: str | None) -> Item:
        attrs = _nla_str(IFLA_IFNAME, name) if name is not None else b""
        if msg_type == RTM_GETLINK:
            # Without the counters (IFLA_STATS*, VF stats) an answer is half the size.
            attrs += _nla_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        seq = self._send(msg_type, flags, _IFI.pack(socket.AF_UNSPEC, 0, index, 0, 0) + attrs)
        while True:
            for _, got, item in parse(self._sock.recv(65536)):
                if got == seq:
                    return item

    def _dump_raw(self, msg_type: int, body: bytes) -> Iterator[tuple[int, bytes, int, int]]:
        """(type, datagram, body start, end) of each answer to a dump request."""
        seq = self._send(msg_type, NLM_F_DUMP, body)
        while True:
            data = self._sock.recv(1 << 17)
            for kind, got, start, end in _messages(data):
                if got != seq:
                    continue
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    code = -_ERR.unpack_from(data, start)[0] if end - start >= _ERR.size else 0
                    if code:
                        raise RtnlError(code, f"netlink dump: {os.strerror(code)}")
                    continue
                yield kind, data, start, end

    def _dump(self, msg_type: int, body: bytes) -> list[Item]:
        items: list[Item] = []
        for kind, data, start, end in self._dump_raw(msg_type, body):
            item = _item(kind, data, start, end)
            if item is not None:
                items.append(item)
        return items

    def _strict(self) -> bool:
        """Ask the kernel to filter dumps by the request's fields (Linux >= 4.20): a node
        with n pods otherwise answers every ADD's address and route reads with O(n)
        entries (each veth's link-local address and route) to parse and drop here."""
        if self._strict_ok is None:
            try:
                self._sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
                self._strict_ok = True
            except OSError:
                self._strict_ok = False
        return self._strict_ok

    def addrs(self, family: int, index: int) -> list[Addr]:
        """The addresses of ``family`` on link ``index``."""
        body = _IFA.pack(family, 0, 0, 0, index if self._strict() else 0)
        items = self._dump(RTM_GETADDR, body)
        return [a for a in items if isinstance(a, Addr) and a.index == index]

    def routes(self, family: int, oif: int, table: int) -> list[Route]:
        """The routes of ``family`` in ``table`` whose output link is ``oif``."""
        body = _RTM.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        if self._strict():
            body = _RTM.pack(family, 0, 0, 0, table & 0xFF, 0, 0, 0, 0)
            body += _nla_u32(RTA_TABLE, table) + _nla_u32(RTA_OIF, oif)
        items = self._dump(RTM_GETROUTE, body)
        return [r for r in items if isinstance(r, Route) and r.table == table and r.oif == oif]

    def _ack(self, msg_type: int, flags: int, body: bytes, what: str) -> None:
        seq = self._send(msg_type, NLM_F_ACK | flags, body)
        while True:
            for kind, got, item in parse(self._sock.recv(65536)):
                if got == seq and kind == NLMSG_ERROR and isinstance(item, int):
                    if item:
                        raise RtnlError(item, f"{what}: {os.strerror(item)}")
                    return

    def add_veth(
        self,
        name: str,
        peer: str,
        peer_netns_fd: int,
        *,
        mtu: int | None = None,
        peer_mtu: int | None = None,
        address: str | None = None,
    ) -> None:
        """Create veth ``name`` here, its peer ``peer`` in the namespace ``peer_netns_fd``
        (EEXIST raises RtnlError, as any other refusal)."""
        peer_attrs = _nla_str(IFLA_IFNAME, peer) + _nla_u32(IFLA_NET_NS_FD, peer_netns_fd)
        if peer_mtu:
            peer_attrs += _nla_u32(IFLA_MTU, peer_mtu)
        peer_msg = _IFI.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + peer_attrs
        info = _nla_str(IFLA_INFO_KIND, "veth") + nla(
            IFLA_INFO_DATA | NLA_F_NESTED, nla(VETH_INFO_PEER | NLA_F_NESTED, peer_msg)
        )
        attrs = _nla_str(IFLA_IFNAME, name)
        if mtu:
            attrs += _nla_u32(IFLA_MTU, mtu)
        if address:
            attrs += nla(IFLA_ADDRESS, bytes.fromhex(address.replace(":", "")))
        attrs += nla(IFLA_LINKINFO | NLA_F_NESTED, info)
        body = _IFI.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attrs
        self._ack(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"creating veth {name}/{peer}")

    def set_link(
        self,
        index: int,
        *,
        up: bool = False,
        master: int | None = None,
        mtu: int | None = None,
        group: int | None = None,
    ) -> None:
        """Bring link ``index`` up, enslave it to ``master``, set its MTU and device group
        (what is given)."""
        flags = IFF_UP if up else 0
        attrs = _nla_u32(IFLA_MASTER, master) if master is not None else b""
        if mtu:
            attrs += _nla_u32(IFLA_MTU, mtu)
        if group is not None:
            attrs += _nla_u32(IFLA_GROUP, group)
        body = _IFI.pack(socket.AF_UNSPEC, 0, index, flags, flags) + attrs
        self._ack(RTM_NEWLINK, 0, body, f"setting link {index}")

    def add_addr(
        self, index: int, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    ) -> None:
        """Add ``iface`` to link ``index`` (as ``ip addr add``: IPv4 with IFA_LOCAL too)."""
        family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
        raw = iface.ip.packed
        attrs = nla(IFA_LOCAL, raw) if family == socket.AF_INET else b""
        attrs += nla(IFA_ADDRESS, raw)
        body = _IFA.pack(family, iface.network.prefixlen, 0, 0, index) + attrs
        self._ack(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"adding {iface}")

    def replace_route(
        self,
        dst: ipaddress.IPv4Network | ipaddress.IPv6Network,
        oif: int,
        gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
        scope: int,
    ) -> None:
        """``ip route replace`` in the main table, proto static (as pyroute2 made them)."""
        family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
        attrs = _nla_u32(RTA_TABLE, RT_TABLE_MAIN)
        if dst.prefixlen:
            attrs += nla(RTA_DST, dst.network_address.packed)
        attrs += _nla_u32(RTA_OIF, oif)
        if gateway is not None:
            attrs += nla(RTA_GATEWAY, gateway.packed)
        body = _RTM.pack(
            family, dst.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, scope, RTN_UNICAST, 0
        )
        self._ack(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, body + attrs, f"route {dst}")

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

    def links(self) -> list[Link]:
        """Every link of the namespace."""
        return [i for i in self._dump(RTM_GETLINK, _LINKS_BODY) if isinstance(i, Link)]

    def link_groups(self) -> dict[int, int]:
        """The device group of every link, by index: reads one early attribute of each
        (a full Link costs ~75 us to parse; the group batches read every link twice)."""
        out: dict[int, int] = {}
        for kind, data, start, end in self._dump_raw(RTM_GETLINK, _LINKS_BODY):
            if kind == RTM_NEWLINK and end - start >= _IFI.size:
                index = _IFI.unpack_from(data, start)[2]
                attrs = _attrs(data, start + _IFI.size, end, _GROUP_ONLY)
                out[index] = _u32(attrs.get(IFLA_GROUP)) or 0
        return out

    def del_group(self, group: int) -> None:
        """Delete every link in device group ``group`` in one request (``ip link del group``):
        the kernel then waits for RCU once for all of them."""
        if not group:
            raise ValueError("group 0 is every link's default group")
        body = _IFI.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _nla_u32(IFLA_GROUP, group)
        self._ack(RTM_DELLINK, 0, body, f"deleting link group {group}")


def rtnl_in(netns_fd: int | None) -> Rtnl:
    """An Rtnl on the namespace ``netns_fd`` (None: the agent's own, the node's)."""
    return Rtnl(None if netns_fd is None else run_in_netns(netns_fd, new_socket))
