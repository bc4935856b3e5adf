"""Snapshots of a link from pyroute2 messages, and what differs between two snapshots."""

from __future__ import annotations

import time

from ...cni.errors import CNIError, ErrorCode
from ..datapath.netlink import IFF_UP, NUD_PERMANENT, Message, Netlink, get_link, lookup
from ..datapath.sysctl import read_sysctl
from .plan import (
    AF_INET,
    AF_INET6,
    INFINITY_LIFE_TIME,
    AddrSnap,
    BridgePre,
    NeighSnap,
    NextHop,
    RouteSnap,
    UplinkSnapshot,
    addresses_to_move,
    replay_plan,
)


def capture(ipr: Netlink, ifname: str, bridge: str | None) -> UplinkSnapshot:
    """Everything that makes ``ifname`` the node's interface, as plain data."""
    index = lookup(ipr, ifname)
    if index is None:
        raise CNIError(ErrorCode.INVALID_CONFIG, f"uplinkInterface {ifname!r} does not exist")
    link = get_link(ipr, index)
    names = {int(lk["index"]): str(lk.get_attr("IFLA_IFNAME")) for lk in ipr.get_links()}
    addresses = tuple(addr_from_msg(m) for m in ipr.addr("dump") if m["index"] == index)
    routes = tuple(r for r in all_routes(ipr, names) if ifname in r.devices)
    neighbours = tuple(
        NeighSnap(family=int(m["family"]), dst=str(m.get_attr("NDA_DST")), lladdr=str(lladdr))
        for m in ipr.neigh("dump")
        if m["ifindex"] == index
        and m["state"] & NUD_PERMANENT
        and (lladdr := m.get_attr("NDA_LLADDR"))
        and m.get_attr("NDA_DST")
    )
    pre = None
    br_index = lookup(ipr, bridge) if bridge else None
    if br_index is not None:
        br = get_link(ipr, br_index)
        pre = BridgePre(
            ifindex=br_index,
            mac=str(br.get_attr("IFLA_ADDRESS")),
            mtu=int(br.get_attr("IFLA_MTU")),
            accept_ra=read_sysctl(f"net/ipv6/conf/{bridge}/accept_ra"),
            accept_dad=read_sysctl(f"net/ipv6/conf/{bridge}/accept_dad"),
        )
    return UplinkSnapshot(
        uplink=ifname,
        ifindex=index,
        mac=str(link.get_attr("IFLA_ADDRESS")),
        mtu=int(link.get_attr("IFLA_MTU")),
        up=bool(link["flags"] & IFF_UP),
        addresses=addresses,
        routes=routes,
        neighbours=neighbours,
        accept_ra=read_sysctl(f"net/ipv6/conf/{ifname}/accept_ra"),
        autoconf=read_sysctl(f"net/ipv6/conf/{ifname}/autoconf"),
        bridge_pre=pre,
        taken_at=time.time(),
        disable_ipv6=read_sysctl(f"net/ipv6/conf/{ifname}/disable_ipv6"),
    )


def addr_from_msg(m: Message) -> AddrSnap:
    family = int(m["family"])
    local, address = m.get_attr("IFA_LOCAL"), m.get_attr("IFA_ADDRESS")
    own = local or address
    peer = address if local and address and address != local else None
    cache = m.get_attr("IFA_CACHEINFO") or {}
    valid, preferred = (
        cache.get("ifa_valid", INFINITY_LIFE_TIME),
        cache.get("ifa_preferred", INFINITY_LIFE_TIME),
    )
    return AddrSnap(
        family=family,
        address=str(own),
        prefixlen=int(m["prefixlen"]),
        scope=int(m["scope"]),
        flags=int(m.get_attr("IFA_FLAGS") or m["flags"]),
        label=m.get_attr("IFA_LABEL"),
        peer=peer,
        broadcast=m.get_attr("IFA_BROADCAST"),
        valid_lft=None if valid == INFINITY_LIFE_TIME else int(valid),
        preferred_lft=None if preferred == INFINITY_LIFE_TIME else int(preferred),
        proto=m.get_attr("IFA_PROTO"),
        rt_priority=m.get_attr("IFA_RT_PRIORITY"),
    )


def all_routes(ipr: Netlink, names: dict[int, str] | None = None) -> list[RouteSnap]:
    if names is None:
        names = {int(lk["index"]): str(lk.get_attr("IFLA_IFNAME")) for lk in ipr.get_links()}
    out = []
    for m in ipr.route("dump"):
        if m["family"] not in (AF_INET, AF_INET6):
            continue
        metrics = []
        raw_metrics = m.get_attr("RTA_METRICS")
        for key, value in raw_metrics["attrs"] if raw_metrics else ():
            if isinstance(value, int) and key.startswith("RTAX_"):
                metrics.append((key[5:].lower(), value))
        hops = []
        for nh in m.get_attr("RTA_MULTIPATH") or ():
            hops.append(
                NextHop(
                    gateway=nh.get_attr("RTA_GATEWAY"),
                    dev=names.get(int(nh["ifindex"])),
                    hops=int(nh["hops"]),
                    flags=int(nh["flags"]),
                )
            )
        oif = m.get_attr("RTA_OIF")
        dst = m.get_attr("RTA_DST")
        out.append(
            RouteSnap(
                family=int(m["family"]),
                dst=str(dst) if dst is not None and m["dst_len"] else None,
                dst_len=int(m["dst_len"]),
                table=int(m.get_attr("RTA_TABLE") or m["table"]),
                proto=int(m["proto"]),
                scope=int(m["scope"]),
                type=int(m["type"]),
                flags=int(m["flags"]) & 0xFF,
                priority=m.get_attr("RTA_PRIORITY"),
                tos=int(m["tos"]),
                gateway=m.get_attr("RTA_GATEWAY"),
                dev=names.get(int(oif)) if oif is not None else None,
                prefsrc=m.get_attr("RTA_PREFSRC"),
                src=m.get_attr("RTA_SRC"),
                src_len=int(m["src_len"]),
                metrics=tuple(metrics),
                pref=m.get_attr("RTA_PREF"),
                multipath=tuple(hops),
            )
        )
    return out


def snapshot_differences(want: UplinkSnapshot, have: UplinkSnapshot) -> list[str]:
    """What differs between two snapshots, ignoring what the kernel regenerates or ages."""
    problems = []
    if want.mac != have.mac:
        problems.append(f"MAC {have.mac} instead of {want.mac}")
    if want.mtu != have.mtu:
        problems.append(f"MTU {have.mtu} instead of {want.mtu}")

    def addr_key(a: AddrSnap) -> tuple[object, ...]:
        return (a.family, a.address, a.prefixlen, a.scope, a.settable_flags(), a.secondary,
                a.label, a.peer, a.broadcast, a.valid_lft is None, a.rt_priority)  # fmt: skip

    want_addrs = {addr_key(a) for a in addresses_to_move(want)}
    have_addrs = {addr_key(a) for a in addresses_to_move(have)}
    for key in sorted(want_addrs - have_addrs, key=str):
        problems.append(f"address {key[1]}/{key[2]} missing or changed")
    for key in sorted(have_addrs - want_addrs, key=str):
        problems.append(f"unexpected address {key[1]}/{key[2]}")
    want_routes = set(replay_plan(want.routes, want.uplink))
    have_routes = set(replay_plan(have.routes, have.uplink))
    problems += [f"route {r.describe()} missing" for r in want_routes - have_routes]
    problems += [f"unexpected route {r.describe()}" for r in have_routes - want_routes]
    return problems
