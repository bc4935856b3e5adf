"""What a caller asks for (LeaseRequest), what it gets (Lease), and how an ACK becomes a
Lease: option decoding and T1/T2 sanitising. The journal holds the JSON record form."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import TypeVar

from . import options
from .codec import DecodeError, Message, Opt

log = logging.getLogger(__name__)

# Always asked for; ipam.request adds to these.
BASE_REQUEST = (1, 3, 6, 15, 26, 28, 51, 54, 58, 59, 119, 121)

# Options the client owns in every message; ipam.provide cannot replace them.
CLIENT_OWNED = frozenset(
    {
        Opt.PAD,
        Opt.OVERLOAD,
        Opt.MESSAGE_TYPE,
        Opt.REQUESTED_IP,
        Opt.SERVER_ID,
        Opt.PARAM_REQUEST,
        Opt.MAX_MESSAGE_SIZE,
        Opt.END,
    }
)

DEFAULT_LEASE_TIME = 3600.0  # only if a server omits option 51, which RFC 2131 forbids
MIN_LEASE_TIME = 4.0  # below this T1/T2 arithmetic would make the client spin

_T = TypeVar("_T")


@dataclass(frozen=True)
class LeaseRequest:
    key: str
    netns_path: str
    netns_fd: int
    ifname: str
    mac: str
    client_id: bytes
    hostname: str | None
    extra_request: tuple[int, ...] = ()
    provide: tuple[tuple[int, bytes], ...] = ()
    timeout: float = 30.0
    meta: Mapping[str, str] = field(default_factory=dict)
    prefer_address: IPv4Address | None = None  # option 50 in DISCOVER (a hint to the server)
    # BOOTP broadcast flag: for interfaces that cannot receive a unicast to an address they
    # do not have yet (ipvlan slaves share their parent's MAC and demux by IP).
    broadcast_flag: bool = False
    # ipam.serverAllowList: OFFERs, ACKs and NAKs from any other server id are ignored, so a
    # rogue server that answers first cannot hand out (or take away) an address.
    server_allow_list: tuple[IPv4Address, ...] = ()
    # "ip@mac" entries of ipam.serverAllowList: replies claiming that server id are accepted
    # only from that link-layer source (without a pin, the first lease's source is learned).
    server_macs: tuple[tuple[IPv4Address, str], ...] = ()
    # ipam.arpProbeWait; None: the agent's default (Timing.arp_probe_wait).
    arp_probe_wait: float | None = None
    # ipam.clientId: "pod" sends client_id as option 61, "mac" 01+mac, "none" no option 61.
    client_id_mode: str = "pod"


class LeaseState(StrEnum):
    """Where a lease is in RFC 2131's state machine; the journal stores the value."""

    BOUND = "BOUND"
    RENEWING = "RENEWING"
    REBINDING = "REBINDING"
    REBOOTING = "REBOOTING"  # INIT-REBOOT after an agent restart
    EXPIRED = "EXPIRED"  # lost (expiry or NAK); the address is off the pod; re-acquiring


@dataclass(frozen=True)
class AckInfo:
    """Everything the client takes from an ACK, before it is tied to an attachment."""

    address: IPv4Interface
    server_id: IPv4Address
    router: IPv4Address | None
    dns_servers: tuple[IPv4Address, ...]
    domain: str | None
    search: tuple[str, ...]
    mtu: int | None
    routes: tuple[tuple[IPv4Network, IPv4Address], ...]
    lease_time: float
    t1: float
    t2: float
    options: Mapping[int, bytes] = field(default_factory=dict)  # the ACK's options, raw


@dataclass(frozen=True, kw_only=True)
class Lease(AckInfo):
    """An ACK's terms tied to one attachment: when its times fall due, and what the client
    needs to keep it (identity, allowed servers) across renewals and agent restarts."""

    key: str
    bound_at: float
    renew_at: float
    rebind_at: float
    expires_at: float
    state: LeaseState
    netns_path: str
    netns_inode: int
    ifname: str
    mac: str
    client_id: bytes
    hostname: str | None
    meta: Mapping[str, str] = field(default_factory=dict)
    server_mac: str | None = None  # link-layer source of the server's ACK: next hop to it
    extra_request: tuple[int, ...] = ()
    provide: tuple[tuple[int, bytes], ...] = ()
    broadcast_flag: bool = False
    server_allow_list: tuple[IPv4Address, ...] = ()
    arp_probe_wait: float | None = None  # kept for re-acquisition after a restart
    server_macs: tuple[tuple[IPv4Address, str], ...] = ()  # pinned server MACs
    client_id_mode: str = "pod"  # journaled: a re-adopted lease keeps its identity

    def with_state(self, state: LeaseState) -> Lease:
        return replace(self, state=state)


def bind(
    info: AckInfo,
    *,
    where: LeaseRequest | Lease,
    inode: int,
    server_mac: str | None,
    sent_at: float,
) -> Lease:
    """The lease an ACK gives the attachment ``where`` describes (the ADD's request, or the
    lease it renews): its times count from ``sent_at``, the wall time of the REQUEST."""
    return Lease(
        address=info.address,
        server_id=info.server_id,
        router=info.router,
        dns_servers=info.dns_servers,
        domain=info.domain,
        search=info.search,
        mtu=info.mtu,
        routes=info.routes,
        lease_time=info.lease_time,
        t1=info.t1,
        t2=info.t2,
        options=info.options,
        key=where.key,
        bound_at=sent_at,
        renew_at=sent_at + info.t1,
        rebind_at=sent_at + info.t2,
        expires_at=sent_at + info.lease_time,
        state=LeaseState.BOUND,
        netns_path=where.netns_path,
        netns_inode=inode,
        ifname=where.ifname,
        mac=where.mac.lower(),
        client_id=where.client_id,
        hostname=where.hostname,
        meta=dict(where.meta),
        server_mac=server_mac,
        extra_request=tuple(where.extra_request),
        provide=tuple(where.provide),
        broadcast_flag=where.broadcast_flag,
        server_allow_list=tuple(where.server_allow_list),
        arp_probe_wait=where.arp_probe_wait,
        server_macs=tuple(where.server_macs),
        client_id_mode=where.client_id_mode,
    )


def request_list(extra: tuple[int, ...]) -> bytes:
    codes: list[int] = []
    for code in (*BASE_REQUEST, *extra):
        if 0 < code < 255 and code not in codes:
            codes.append(code)
    return bytes(codes)


def sanitize_times(
    lease_time: float, t1: float | None, t2: float | None
) -> tuple[float, float, float]:
    """(lease, T1, T2) with 0 < T1 < T2 < lease; server values kept when they fit.

    RFC 2131 4.4.5 defaults: T1 = 0.5 * lease, T2 = 0.875 * lease.
    """
    lease = max(float(lease_time), MIN_LEASE_TIME)
    t2_ok = t2 is not None and 0 < t2 < lease
    rebind = float(t2) if t2_ok and t2 is not None else 0.875 * lease
    if t1 is not None and 0 < t1 < rebind:
        renew = float(t1)
    else:
        renew = 0.5 * lease if 0.5 * lease < rebind else rebind * (0.5 / 0.875)
    return lease, renew, rebind


def _opt(msg: Message, code: int, decoder: Callable[[bytes], _T]) -> _T | None:
    raw = msg.options.get(code)
    if raw is None:
        return None
    try:
        return decoder(raw)
    except DecodeError as exc:
        log.warning("ignoring malformed option %d from server: %s", code, exc)
        return None


def _prefix_for(msg: Message, address: IPv4Address) -> int:
    prefix = _opt(msg, Opt.SUBNET_MASK, options.netmask_prefix)
    if prefix is not None and 0 < prefix <= 32:
        return prefix
    first = address.packed[0]
    return 8 if first < 128 else 16 if first < 192 else 24


def _mtu(raw: bytes) -> int:
    value = options.u16(raw)
    if value < 68:  # RFC 2132 5.1: minimum legal MTU
        raise DecodeError(f"MTU {value} below 68")
    return value


def ack_info(msg: Message, fallback_server: IPv4Address) -> AckInfo:
    """Decode an ACK; a malformed option is ignored (logged), never fatal."""
    server_id = _opt(msg, Opt.SERVER_ID, options.ipv4) or fallback_server
    lease_time = _opt(msg, Opt.LEASE_TIME, options.u32)
    if lease_time is None:
        log.warning("server %s sent no lease time; assuming %ds", server_id, DEFAULT_LEASE_TIME)
    lease, t1, t2 = sanitize_times(
        float(lease_time) if lease_time is not None else DEFAULT_LEASE_TIME,
        _opt(msg, Opt.RENEWAL_TIME, options.u32),
        _opt(msg, Opt.REBINDING_TIME, options.u32),
    )
    routers = _opt(msg, Opt.ROUTER, options.ipv4_list)
    classless = _opt(msg, Opt.CLASSLESS_ROUTES, options.classless_routes)
    if classless is not None:
        # RFC 3442: with option 121 present, options 3 and 33 are ignored.
        router = next((gw for net, gw in classless if net.prefixlen == 0), None)
        routes = classless
    else:
        router = routers[0] if routers else None
        routes = _opt(msg, Opt.STATIC_ROUTES, options.static_routes) or ()
    domain = _opt(msg, Opt.DOMAIN, options.text)
    if domain is not None:
        domain = domain.strip(" \0").rstrip(".") or None
        if domain is not None and not valid_domain(domain):
            # It goes into resolv.conf: a newline there is a line of the server's choosing.
            log.warning(
                "ignoring option 15 from server %s: %r is not a domain name", server_id, domain
            )
            domain = None
    return AckInfo(
        address=IPv4Interface((msg.yiaddr, _prefix_for(msg, msg.yiaddr))),
        server_id=server_id,
        router=router,
        dns_servers=_opt(msg, Opt.DNS, options.ipv4_list) or (),
        domain=domain,
        search=_opt(msg, Opt.DOMAIN_SEARCH, lambda raw: _search_list(raw, server_id)) or (),
        mtu=_opt(msg, Opt.INTERFACE_MTU, _mtu),
        routes=routes,
        lease_time=lease,
        t1=t1,
        t2=t2,
        options=dict(msg.options),
    )


_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


def valid_domain(name: str) -> bool:
    """A name fit for resolv.conf: LDH labels (and "_", used by some directories) of 1-63
    characters, 253 in all; no whitespace, control characters or other text."""
    name = name[:-1] if name.endswith(".") else name
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def _search_list(raw: bytes, server: IPv4Address) -> tuple[str, ...]:
    """Option 119, name by name: a name that does not decode or is not a valid domain name
    is dropped (logged); the valid ones are kept. A structurally broken option raises."""
    if not raw:
        raise DecodeError("empty domain search option")
    names: list[str] = []
    for start in _name_starts(raw):
        try:
            name, _end = options.read_name(raw, start)
        except DecodeError as exc:
            log.warning("ignoring a name in option 119 from server %s: %s", server, exc)
            continue
        if not valid_domain(name):
            log.warning(
                "ignoring option 119 name %r from server %s: not a domain name", name, server
            )
            continue
        if name not in names:
            names.append(name)
    return tuple(names)


def _name_starts(raw: bytes) -> list[int]:
    """Offsets of the names in an RFC 1035 name list, from its label lengths alone."""
    starts: list[int] = []
    pos = 0
    while pos < len(raw):
        starts.append(pos)
        while True:
            if pos >= len(raw):
                raise DecodeError("domain name runs past the end of the option")
            size = raw[pos]
            if size == 0:
                pos += 1
                break
            if size & 0xC0:  # compression pointer (or a reserved type): ends the name
                pos += 2
                break
            pos += 1 + size
    return starts
