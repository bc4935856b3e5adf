"""Replaying a snapshot's addresses, routes and neighbours onto a link (netlink verbs).

Each verb tolerates the state it would create or remove being there already, so a
takeover or rollback can be re-run from any point.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

from ...cni.errors import CNIError, ErrorCode
from ..datapath.netlink import (
    EEXIST,
    NUD_PERMANENT,
    Netlink,
    NetlinkError,
    describe,
    get_link,
    lookup,
    tolerate,
)
from .plan import _RTNH_STATE_FLAGS, AF_INET, AddrSnap, NeighSnap, RouteSnap


def addr_add(ipr: Netlink, index: int, a: AddrSnap, label: str | None) -> None:
    kwargs: dict[str, object] = {
        "index": index,
        "family": a.family,
        "address": a.peer or a.address,
        "prefixlen": a.prefixlen,
        "scope": a.scope,
        "flags": a.settable_flags(),
    }
    if a.family == AF_INET or a.peer:
        kwargs["local"] = a.address
    if a.family == AF_INET and label:
        kwargs["label"] = label
    if a.broadcast:
        kwargs["broadcast"] = a.broadcast
    if a.rt_priority:
        kwargs["rt_priority"] = a.rt_priority
    if a.valid_lft is not None:
        # Lifetimes are replayed as snapshotted: whoever manages them (DHCP client, RA)
        # stays their owner; see takeover._warn_finite_lifetimes.
        kwargs["valid_lft"] = a.valid_lft
        kwargs["preferred_lft"] = min(a.preferred_lft or 0, a.valid_lft)
    with tolerate(EEXIST):
        ipr.addr("add", **kwargs)


def addr_del(ipr: Netlink, index: int, a: AddrSnap) -> None:
    kwargs: dict[str, object] = {
        "index": index,
        "family": a.family,
        "address": a.peer or a.address,
        "prefixlen": a.prefixlen,
    }
    if a.family == AF_INET or a.peer:
        kwargs["local"] = a.address
    # Already gone, e.g. a secondary deleted together with its primary.
    with tolerate(errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH, errno.ENODEV):
        ipr.addr("del", **kwargs)


def _route_kwargs(r: RouteSnap, names: dict[str, int]) -> dict[str, object]:
    kwargs: dict[str, object] = {
        "family": r.family,
        "dst_len": r.dst_len,
        "table": r.table,
        "proto": r.proto,
        "scope": r.scope,
        "type": r.type,
        "tos": r.tos,
    }
    if r.dst:
        kwargs["dst"] = r.dst
    if r.src:
        kwargs["src"] = r.src
        kwargs["src_len"] = r.src_len
    if r.priority is not None:
        kwargs["priority"] = r.priority
    if r.gateway:
        kwargs["gateway"] = r.gateway
    if r.dev:
        kwargs["oif"] = names[r.dev]
    if r.prefsrc:
        kwargs["prefsrc"] = r.prefsrc
    if r.flags & ~_RTNH_STATE_FLAGS:
        kwargs["flags"] = r.flags & ~_RTNH_STATE_FLAGS
    if r.metrics:
        kwargs["metrics"] = dict(r.metrics)
    if r.pref is not None:
        kwargs["pref"] = r.pref
    if r.multipath:
        kwargs["multipath"] = [
            {
                "gateway": nh.gateway,
                "ifindex": names.get(nh.dev or "", 0),
                "hops": nh.hops,
                "flags": nh.flags & ~_RTNH_STATE_FLAGS,
            }
            for nh in r.multipath
        ]
    return kwargs


def route_add(ipr: Netlink, r: RouteSnap, names: dict[str, int]) -> None:
    try:
        ipr.route("add", **_route_kwargs(r, names))
    except NetlinkError as exc:
        if exc.code != EEXIST:
            raise CNIError(
                ErrorCode.UPLINK_FAILED,
                f"could not add route {r.describe()}: {describe(exc)}",
            ) from exc


def route_del(ipr: Netlink, r: RouteSnap, names: dict[str, int]) -> None:
    if any(dev not in names for dev in r.devices):
        return
    with tolerate(errno.ESRCH, errno.ENOENT, errno.ENODEV):
        ipr.route("del", **_route_kwargs(r, names))


def neigh_replace(ipr: Netlink, index: int, neighbours: Iterable[NeighSnap]) -> None:
    for n in neighbours:
        ipr.neigh(
            "replace",
            family=n.family,
            dst=n.dst,
            lladdr=n.lladdr,
            ifindex=index,
            state=NUD_PERMANENT,
        )


def in_place(ipr: Netlink, uplink: str, bridge: str) -> bool:
    up, br = lookup(ipr, uplink), lookup(ipr, bridge)
    return up is not None and br is not None and get_link(ipr, up).get_attr("IFLA_MASTER") == br
