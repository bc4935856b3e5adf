"""Pod addresses and routes, including the node-pointing default route.

With ``defaultRoute: "node"`` the pod gets an on-link /32 route to the node's address and
``default via <node>``, so traffic leaving the LAN crosses the node's conntrack and
firewall (kube-proxy, MetalLB) instead of going straight to the LAN router.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from ...cni.errors import CNIError, ErrorCode
from .netlink import EEXIST, RT_SCOPE_LINK, RT_SCOPE_UNIVERSE, RT_TABLE_MAIN, netns_ipr
from .rtnl import RtnlError, rtnl_in

log = logging.getLogger(__name__)

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class PodRoute:
    dst: IPNetwork
    gw: IPAddress | None = None

    def to_result(self) -> dict[str, str]:
        out = {"dst": str(self.dst)}
        if self.gw is not None:
            out["gw"] = str(self.gw)
        return out


@dataclass(frozen=True)
class PodAddressing:
    addresses: tuple[IPInterface, ...]
    routes: tuple[PodRoute, ...] = ()
    gateway: IPAddress | None = None
    mtu: int | None = None
    # per address (same order), when the IPAM names one per address (delegated IPAM)
    ip_gateways: tuple[IPAddress | None, ...] = ()
    gateway6: ipaddress.IPv6Address | None = None  # the SLAAC address's (result only)


def plan_routes(
    mode: str,
    node_ip: ipaddress.IPv4Address | None,
    router: ipaddress.IPv4Address | None,
    classless: tuple[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address], ...],
    static: tuple[PodRoute, ...],
    *,
    subnet: ipaddress.IPv4Network | None = None,
) -> tuple[tuple[PodRoute, ...], IPAddress | None]:
    """Routes to install in the pod and the gateway to report.

    ``mode`` is the defaultRoute setting. With option 121 present the router option is
    ignored (RFC 3442); its default route is used only in "dhcp" mode.

    ``classless`` are the server's routes (option 121, or 33). In "node" mode every pod
    packet leaving the LAN must cross the node, so a server route is kept only if it stays
    on the LAN (its destination inside ``subnet``, the leased subnet) or goes via the node;
    the others (``0.0.0.0/1`` + ``128.0.0.0/1`` via another host would take all off-LAN
    traffic past the node) are dropped and logged. ``static`` (ipam.routes, the admin's
    own) are always kept.
    """
    routes: list[PodRoute] = []
    gateway: IPAddress | None = None
    default = ipaddress.IPv4Network("0.0.0.0/0")
    unspecified = ipaddress.IPv4Address("0.0.0.0")
    if mode == "node":
        if node_ip is None:
            raise CNIError(
                ErrorCode.INVALID_CONFIG,
                'defaultRoute "node" needs an IPv4 address on the bridge',
                "set uplinkInterface so the node address moves to the bridge, "
                'or use defaultRoute "dhcp"',
            )
        # On-link /32 first: the default route's gateway must be reachable.
        routes.append(PodRoute(ipaddress.IPv4Network(f"{node_ip}/32")))
        gateway = node_ip
    elif mode == "dhcp":
        gateway = None if classless else router
    for dst, gw in classless:
        if dst == default:
            if mode == "dhcp":
                gateway = gw
            continue
        if mode == "node" and not _on_lan(dst, gw, node_ip, subnet):
            log.warning(
                'defaultRoute "node": ignoring the DHCP server\'s route %s via %s: it would '
                "take pod traffic leaving the LAN past the node",
                dst,
                "on-link" if gw == unspecified else gw,
            )
            continue
        routes.append(PodRoute(dst, None if gw == unspecified else gw))
    routes.extend(static)
    if gateway is not None:
        routes.append(PodRoute(default, gateway))
    return tuple(routes), gateway


def _on_lan(
    dst: ipaddress.IPv4Network,
    gw: ipaddress.IPv4Address,
    node_ip: ipaddress.IPv4Address | None,
    subnet: ipaddress.IPv4Network | None,
) -> bool:
    if node_ip is not None and gw == node_ip:
        return True
    return subnet is not None and dst.subnet_of(subnet)


def configure_pod(netns_fd: int, ifname: str, addressing: PodAddressing) -> None:
    """Add addresses then routes (on-link routes first) inside the pod namespace.

    Raw rtnetlink (rtnl.py): on every ADD, where pyroute2 spent ~5 ms of CPU."""
    with rtnl_in(netns_fd) as rt:
        link = rt.get_link(name=ifname)
        if link is None:
            raise CNIError(ErrorCode.IO_FAILURE, f"pod interface {ifname} vanished during ADD")
        index = link.index
        if addressing.mtu:
            try:
                rt.set_link(index, mtu=addressing.mtu)
            except RtnlError as exc:
                raise CNIError(
                    ErrorCode.IO_FAILURE, f"setting MTU {addressing.mtu} on {ifname} failed: {exc}"
                ) from None
        for iface in addressing.addresses:
            try:
                rt.add_addr(index, iface)
            except RtnlError as exc:
                if exc.errno != EEXIST:
                    raise CNIError(
                        ErrorCode.IO_FAILURE, f"adding {iface} to {ifname} failed: {exc}"
                    ) from None
        ordered = sorted(addressing.routes, key=lambda r: (r.gw is not None, -r.dst.prefixlen))
        for route in ordered:
            scope = RT_SCOPE_LINK if route.gw is None else RT_SCOPE_UNIVERSE
            try:
                rt.replace_route(route.dst, index, route.gw, scope)
            except RtnlError as exc:
                raise CNIError(
                    ErrorCode.IO_FAILURE,
                    f"adding route {route.dst}{' via ' + str(route.gw) if route.gw else ''} in the pod failed: {exc}",
                ) from None


def pod_state(
    netns_fd: int, ifname: str
) -> tuple[str | None, set[str], set[tuple[str, str | None]]]:
    """(mac, addresses as CIDR strings, routes as (dst, gw)) of the pod interface."""
    with netns_ipr(netns_fd) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return None, set(), set()
        index = found[0]
        link = ipr.get_links(index)[0]
        addrs = {f"{a.get('address')}/{a['prefixlen']}" for a in ipr.get_addr(index=index)}
        routes: set[tuple[str, str | None]] = set()
        for family in (2, 10):
            for r in ipr.get_routes(family=family, oif=index, table=RT_TABLE_MAIN):
                dst = r.get("dst") or ("0.0.0.0" if family == 2 else "::")
                routes.add((f"{dst}/{r['dst_len']}", r.get("gateway")))
        return link.get("address"), addrs, routes
