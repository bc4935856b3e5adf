"""Test-only parsers of `ip -j` output into the uplink snapshot types (agent/uplink/plan.py).

The agent captures snapshots from netlink; tests describe routes and addresses the way
`ip -j route/addr show` prints them. These parsers were in routeplan.py, used only by tests.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from cni_bridge_dhcp.agent.uplink.plan import (
    AF_INET,
    AF_INET6,
    IFA_F_MANAGETEMPADDR,
    IFA_F_NODAD,
    IFA_F_NOPREFIXROUTE,
    IFA_F_SECONDARY,
    INFINITY_LIFE_TIME,
    AddrSnap,
    NextHop,
    RouteSnap,
)

_PROTOS = {"unspec": 0, "redirect": 1, "kernel": 2, "boot": 3, "static": 4, "ra": 9,
           "dhcp": 16, "bird": 12, "zebra": 11, "xorp": 14, "keepalived": 18, "babel": 42,
           "bgp": 186, "isis": 187, "ospf": 188, "rip": 189, "eigrp": 192}  # fmt: skip
_SCOPES = {"global": 0, "universe": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}
_TYPES = {"unspec": 0, "unicast": 1, "local": 2, "broadcast": 3, "anycast": 4, "multicast": 5,
          "blackhole": 6, "unreachable": 7, "prohibit": 8, "throw": 9, "nat": 10}  # fmt: skip
_TABLES = {"unspec": 0, "compat": 252, "default": 253, "main": 254, "local": 255}
_PREFS = {"medium": 0, "high": 1, "low": 3}
_RTNH_FLAGS = {"dead": 1, "pervasive": 2, "onlink": 4, "offload": 8, "linkdown": 16,
               "unresolved": 32, "trap": 64}  # fmt: skip


# --------------------------------------------------------------------------- ip -j parsing


def routes_from_ip_json(data: Iterable[Mapping[str, Any]], family: int) -> list[RouteSnap]:
    """Routes from ``ip -j [-d] -4|-6 route show table all`` (iproute2 >= 5).

    Fields iproute2 leaves out mean their default (proto boot, table main, scope global,
    type unicast); this mirrors what a netlink dump reports for the same routes.
    """
    out = []
    for r in data:
        dst, dst_len = _prefix(r.get("dst", "default"), family)
        src, src_len = _prefix(r["from"], family) if "from" in r else (None, 0)
        flags = 0
        for flag in r.get("flags", []):
            flags |= _RTNH_FLAGS.get(flag, 0)
        metrics: list[tuple[str, int]] = []
        for m in r.get("metrics", []):
            for k, v in m.items() if isinstance(m, Mapping) else []:
                if isinstance(v, int):
                    metrics.append((str(k), v))
        nexthops = []
        for nh in r.get("nexthops", []):
            nh_flags = 0
            for flag in nh.get("flags", []):
                nh_flags |= _RTNH_FLAGS.get(flag, 0)
            nexthops.append(
                NextHop(
                    gateway=nh.get("gateway"),
                    dev=nh.get("dev"),
                    hops=int(nh.get("weight", 1)) - 1,
                    flags=nh_flags,
                )
            )
        default_metric = 1024 if family == AF_INET6 else None
        out.append(
            RouteSnap(
                family=family,
                dst=dst,
                dst_len=dst_len,
                table=_named(r.get("table", "main"), _TABLES),
                proto=_named(r.get("protocol", "boot"), _PROTOS),
                scope=_named(r.get("scope", "global"), _SCOPES),
                type=_named(r.get("type", "unicast"), _TYPES),
                flags=flags,
                priority=int(r["metric"]) if "metric" in r else default_metric,
                tos=_named(r.get("tos", 0), {}),
                gateway=r.get("gateway"),
                dev=r.get("dev"),
                prefsrc=r.get("prefsrc"),
                src=src,
                src_len=src_len,
                metrics=tuple(metrics),
                pref=_PREFS.get(r["pref"]) if "pref" in r else None,
                multipath=tuple(nexthops),
            )
        )
    return out


def _prefix(text: str, family: int) -> tuple[str | None, int]:
    if text == "default":
        return None, 0
    net = ipaddress.ip_network(text, strict=False)
    expected = 4 if family == AF_INET else 6
    if net.version != expected:
        raise ValueError(f"{text} is not an IPv{expected} prefix")
    return str(net.network_address), net.prefixlen


def _named(value: Any, names: Mapping[str, int]) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if text in names:
        return names[text]
    return int(text, 0)


def addresses_from_ip_json(data: Iterable[Mapping[str, Any]], ifname: str) -> list[AddrSnap]:
    """IPv4/IPv6 addresses of ``ifname`` from ``ip -j addr show``."""
    out = []
    for link in data:
        if link.get("ifname") != ifname:
            continue
        for a in link.get("addr_info", []):
            family = AF_INET if a.get("family") == "inet" else AF_INET6
            flags = IFA_F_SECONDARY if a.get("secondary") else 0
            for name, bit in (("nodad", IFA_F_NODAD), ("noprefixroute", IFA_F_NOPREFIXROUTE),
                              ("mngtmpaddr", IFA_F_MANAGETEMPADDR)):  # fmt: skip
                if a.get(name):
                    flags |= bit
            out.append(
                AddrSnap(
                    family=family,
                    address=a["local"],
                    prefixlen=int(a["prefixlen"]),
                    scope=_named(a.get("scope", "global"), _SCOPES),
                    flags=flags,
                    label=a.get("label"),
                    broadcast=a.get("broadcast"),
                    valid_lft=_lft(a.get("valid_life_time")),
                    preferred_lft=_lft(a.get("preferred_life_time")),
                )
            )
    return out


def _lft(value: Any) -> int | None:
    if value is None or int(value) == INFINITY_LIFE_TIME:
        return None
    return int(value)
