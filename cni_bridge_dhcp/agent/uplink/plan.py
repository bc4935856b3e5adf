"""Snapshots of an uplink's L3 configuration and the pure planning done on them.

Nothing here touches the kernel: the types are plain data (JSON round-trippable for the
takeover journal), and the functions decide *what* to replay and *in which order*. That
keeps the delicate part of the uplink takeover (route ordering, which routes the kernel
regenerates by itself, which interface a regex selects) testable from captured
``ip -j`` output without root.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ...cni.errors import CNIError, ErrorCode
from ...cni.names import IFNAMSIZ
from ..datapath.netlink import (
    RT_SCOPE_UNIVERSE,
    RT_TABLE_MAIN,
    RTPROT_BOOT,
    RTPROT_KERNEL,
    RTPROT_RA,
)

AF_INET = 2
AF_INET6 = 10

RTN_UNICAST = 1
RTNH_F_ONLINK = 4

IFA_F_SECONDARY = 0x01
IFA_F_NODAD = 0x02
IFA_F_HOMEADDRESS = 0x10
IFA_F_MANAGETEMPADDR = 0x100
IFA_F_NOPREFIXROUTE = 0x200
IFA_F_MCAUTOJOIN = 0x400
# Flags userspace may set on RTM_NEWADDR; the others (permanent, tentative, dadfailed,
# secondary, deprecated...) are kernel state derived from lifetimes and DAD.
IFA_SETTABLE_FLAGS = (
    IFA_F_NODAD | IFA_F_HOMEADDRESS | IFA_F_MANAGETEMPADDR | IFA_F_NOPREFIXROUTE | IFA_F_MCAUTOJOIN
)
IFAPROT_KERNEL_LL = 3
INFINITY_LIFE_TIME = 0xFFFFFFFF

# rtm_flags/rtnh_flags the kernel reports but refuses or ignores on input.
_RTNH_STATE_FLAGS = 1 | 2 | 8 | 16 | 32 | 64


@dataclass(frozen=True)
class AddrSnap:
    family: int
    address: str  # IFA_LOCAL for IPv4, IFA_ADDRESS for IPv6
    prefixlen: int
    scope: int = RT_SCOPE_UNIVERSE
    flags: int = 0  # IFA_FLAGS as reported (includes kernel state bits)
    label: str | None = None
    peer: str | None = None  # IFA_ADDRESS when it differs from the local address (p2p)
    broadcast: str | None = None
    valid_lft: int | None = None  # seconds left when snapshotted; None is forever
    preferred_lft: int | None = None
    proto: int | None = None  # IFA_PROTO (kernel >= 5.18)
    rt_priority: int | None = None  # metric of the prefix route (ip addr ... metric N)

    @property
    def secondary(self) -> bool:
        return bool(self.flags & IFA_F_SECONDARY)

    @property
    def interface(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        return ipaddress.ip_interface(f"{self.address}/{self.prefixlen}")

    def settable_flags(self) -> int:
        return self.flags & IFA_SETTABLE_FLAGS


@dataclass(frozen=True)
class NextHop:
    gateway: str | None = None
    dev: str | None = None
    hops: int = 0  # weight - 1, as in struct rtnexthop
    flags: int = 0


@dataclass(frozen=True)
class RouteSnap:
    family: int
    dst: str | None = None  # None: default route (dst_len 0)
    dst_len: int = 0
    table: int = RT_TABLE_MAIN
    proto: int = RTPROT_BOOT
    scope: int = RT_SCOPE_UNIVERSE
    type: int = RTN_UNICAST
    flags: int = 0
    priority: int | None = None
    tos: int = 0
    gateway: str | None = None
    dev: str | None = None
    prefsrc: str | None = None
    src: str | None = None  # IPv6 source-specific routing ("from")
    src_len: int = 0
    metrics: tuple[tuple[str, int], ...] = ()  # e.g. (("mtu", 1400),)
    pref: int | None = None  # IPv6 router preference
    multipath: tuple[NextHop, ...] = ()

    @property
    def is_default(self) -> bool:
        return self.dst_len == 0 and self.src_len == 0

    @property
    def via_gateway(self) -> bool:
        return self.gateway is not None or any(nh.gateway for nh in self.multipath)

    @property
    def devices(self) -> tuple[str, ...]:
        devs = [self.dev] if self.dev else []
        devs += [nh.dev for nh in self.multipath if nh.dev]
        return tuple(devs)

    def describe(self) -> str:
        parts = [f"{self.dst}/{self.dst_len}" if self.dst else "default"]
        if self.gateway:
            parts.append(f"via {self.gateway}")
        for nh in self.multipath:
            parts.append(f"nexthop via {nh.gateway} dev {nh.dev}")
        if self.dev:
            parts.append(f"dev {self.dev}")
        if self.table != RT_TABLE_MAIN:
            parts.append(f"table {self.table}")
        if self.priority:
            parts.append(f"metric {self.priority}")
        return " ".join(parts)

    def on_device(self, old: str, new: str) -> RouteSnap:
        """The same route with every reference to device ``old`` moved to ``new``."""
        return replace(
            self,
            dev=new if self.dev == old else self.dev,
            multipath=tuple(
                replace(nh, dev=new if nh.dev == old else nh.dev) for nh in self.multipath
            ),
        )


@dataclass(frozen=True)
class NeighSnap:
    family: int
    dst: str
    lladdr: str


@dataclass(frozen=True)
class BridgePre:
    """The bridge as it was before the takeover, when it already existed."""

    ifindex: int
    mac: str
    mtu: int
    accept_ra: str | None = None
    accept_dad: str | None = None  # None in journals written before it was recorded


@dataclass(frozen=True)
class UplinkSnapshot:
    uplink: str
    ifindex: int
    mac: str
    mtu: int
    up: bool
    addresses: tuple[AddrSnap, ...]
    routes: tuple[RouteSnap, ...]
    neighbours: tuple[NeighSnap, ...] = ()
    accept_ra: str | None = None
    autoconf: str | None = None
    bridge_pre: BridgePre | None = None
    taken_at: float = 0.0
    # None in journals written before it was recorded: then the port's is left as it is.
    disable_ipv6: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UplinkSnapshot:
        pre = data.get("bridge_pre")
        return cls(
            uplink=str(data["uplink"]),
            ifindex=int(data["ifindex"]),
            mac=str(data["mac"]),
            mtu=int(data["mtu"]),
            up=bool(data["up"]),
            addresses=tuple(AddrSnap(**a) for a in data.get("addresses", ())),
            routes=tuple(_route_from_dict(r) for r in data.get("routes", ())),
            neighbours=tuple(NeighSnap(**n) for n in data.get("neighbours", ())),
            accept_ra=data.get("accept_ra"),
            autoconf=data.get("autoconf"),
            bridge_pre=_bridge_pre(pre) if pre else None,
            taken_at=float(data.get("taken_at", 0.0)),
            disable_ipv6=_sysctl_value(data.get("disable_ipv6")),
        )


def _sysctl_value(value: object) -> str | None:
    """A recorded boolean sysctl ("0" or "1"), or None when absent or anything else."""
    return value if value in ("0", "1") else None


def _bridge_pre(data: Mapping[str, Any]) -> BridgePre:
    """Keys this version knows: a journal from a newer one may record more."""
    known = {f.name for f in fields(BridgePre)}
    return BridgePre(**{k: v for k, v in data.items() if k in known})


def _route_from_dict(data: Mapping[str, Any]) -> RouteSnap:
    values = dict(data)
    values["metrics"] = tuple((str(k), int(v)) for k, v in values.get("metrics", ()))
    values["multipath"] = tuple(NextHop(**nh) for nh in values.get("multipath", ()))
    return RouteSnap(**values)


# --------------------------------------------------------------------------- planning


def is_kernel_ll(addr: AddrSnap, mac: str | None = None) -> bool:
    """An IPv6 link-local address the kernel made itself (the bridge makes its own).

    IFA_PROTO says so on kernels >= 5.18; older ones: fe80::/64 whose interface id is the
    EUI-64 of the link's MAC.
    """
    if addr.family != AF_INET6 or not ipaddress.IPv6Address(addr.address).is_link_local:
        return False
    if addr.proto is not None:
        return addr.proto == IFAPROT_KERNEL_LL
    return mac is not None and addr.address == str(eui64_link_local(mac))


def eui64_link_local(mac: str) -> ipaddress.IPv6Address:
    octets = [int(x, 16) for x in mac.split(":")]
    octets[0] ^= 0x02
    iid = bytes([*octets[:3], 255, 254, *octets[3:]])
    return ipaddress.IPv6Address(b"\xfe\x80" + b"\x00" * 6 + iid)


def addresses_to_move(snapshot: UplinkSnapshot) -> list[AddrSnap]:
    """Addresses in the order to add them so the interface ends up listing them as before.

    IPv4: primaries before their secondaries (a secondary needs its primary), each in
    dump order, since the kernel appends. IPv6: reverse dump order, since the kernel puts
    a new address in front of older ones of the same scope.
    """
    movable = [a for a in snapshot.addresses if not is_kernel_ll(a, snapshot.mac)]
    v4 = [a for a in movable if a.family == AF_INET]
    v6 = [a for a in movable if a.family == AF_INET6]
    return sorted(v4, key=lambda a: a.secondary) + v6[::-1]


def is_kernel_generated(route: RouteSnap) -> bool:
    """Routes the kernel re-creates on its own once the addresses/link are in place.

    ``proto kernel``: prefix, local, broadcast, multicast and fe80::/64 routes follow the
    addresses. ``proto ra``: learned from router advertisements, relearned on the bridge
    (which inherits the uplink's accept_ra) and carrying an expiry we must not freeze.
    """
    return route.proto in (RTPROT_KERNEL, RTPROT_RA)


def replay_plan(routes: Iterable[RouteSnap], uplink: str) -> list[RouteSnap]:
    """Routes pointing at ``uplink`` that must be re-created, most specific first.

    Routes with no gateway (connected, on-link, host /32) go first because a gateway route
    is only accepted once its gateway is reachable on-link; within each group longer
    prefixes first; default routes last of all. The order is total, so the plan (and the
    step numbers in the journal) is deterministic.
    """
    mine = [r for r in routes if uplink in r.devices and not is_kernel_generated(r)]
    return sorted(mine, key=_replay_key)


def _replay_key(r: RouteSnap) -> tuple[Any, ...]:
    return (
        r.is_default,
        r.via_gateway,
        -r.dst_len,
        r.family,
        r.table,
        r.priority or 0,
        _addr_key(r.dst),
        -r.src_len,
        _addr_key(r.src),
        r.tos,
        _addr_key(r.gateway),
    )


def _addr_key(a: str | None) -> tuple[int, int]:
    if a is None:
        return (0, 0)
    ip = ipaddress.ip_address(a)
    return (ip.version, int(ip))


def default_gateway(
    routes: Iterable[RouteSnap], family: int = AF_INET
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The gateway the node uses by default: main table, lowest metric."""
    candidates = [
        r
        for r in routes
        if r.family == family and r.is_default and r.table == RT_TABLE_MAIN and r.type == 1
    ]
    candidates.sort(key=lambda r: r.priority or 0)
    for r in candidates:
        gw = r.gateway or next((nh.gateway for nh in r.multipath if nh.gateway), None)
        if gw:
            return ipaddress.ip_address(gw)
    return None


def primary_ipv4(addresses: Iterable[AddrSnap]) -> ipaddress.IPv4Address | None:
    for a in addresses:
        if a.family == AF_INET and not a.secondary and a.scope == RT_SCOPE_UNIVERSE:
            return ipaddress.IPv4Address(a.address)
    for a in addresses:
        if a.family == AF_INET:
            return ipaddress.IPv4Address(a.address)
    return None


def bridge_label(label: str | None, uplink: str, bridge: str) -> str | None:
    """An IPv4 label carried over to the bridge: eth0 -> cni0, eth0:1 -> cni0:1."""
    if label is None or label == uplink:
        return bridge if label is not None else None
    if label.startswith(uplink + ":"):
        moved = bridge + label[len(uplink) :]
        return moved if len(moved) < IFNAMSIZ else bridge
    return label


def select_uplink(
    spec: str, links: Sequence[tuple[int, str]], *, exclude: Iterable[str] = ()
) -> str:
    """The interface ``spec`` names: an exact name, else the first regex full match by ifindex.

    ``links`` is (ifindex, name) of the node's links; ``exclude`` names links that can never
    be the uplink (the bridge itself). Raises CNIError(7) naming the spec when nothing fits.
    """
    excluded = set(exclude) | {"lo"}
    names = {name for _, name in links}
    if spec in names:
        if spec in excluded:
            raise CNIError(
                ErrorCode.INVALID_CONFIG,
                f"uplinkInterface {spec!r} cannot be used as the uplink",
                "it is the bridge itself or the loopback interface",
            )
        return spec
    try:
        pattern = re.compile(spec)
    except re.error as exc:
        raise CNIError(
            ErrorCode.INVALID_CONFIG,
            f"uplinkInterface {spec!r} is neither an existing interface nor a valid regex",
            str(exc),
        ) from exc
    for _, name in sorted(links):
        if name not in excluded and pattern.fullmatch(name):
            return name
    raise CNIError(
        ErrorCode.INVALID_CONFIG,
        f"uplinkInterface {spec!r} does not exist",
        "no interface has that name and none matches it as a regular expression",
    )


__all__ = [
    "AddrSnap",
    "BridgePre",
    "NeighSnap",
    "NextHop",
    "RouteSnap",
    "UplinkSnapshot",
    "addresses_to_move",
    "bridge_label",
    "default_gateway",
    "is_kernel_generated",
    "is_kernel_ll",
    "primary_ipv4",
    "replay_plan",
    "select_uplink",
]
