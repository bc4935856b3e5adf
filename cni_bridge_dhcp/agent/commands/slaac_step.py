"""ADD's IPv6 step: the pod's SLAAC address into the result, its default route, the node's
forwarding (see datapath/slaac.py for the kernel side and the reasons)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging

from ..config import NetConf
from ..datapath.podroutes import PodAddressing, PodRoute, configure_pod
from ..datapath.slaac import (
    SlaacAddress,
    keep_node_ras,
    node_link_local,
    pod_ipv6_sysctls,
    wait_slaac,
)
from ..firewall import enable_forwarding

log = logging.getLogger(__name__)

DEFAULT6 = ipaddress.IPv6Network("::/0")


def slaac_sysctls(conf: NetConf) -> tuple[tuple[str, str], ...]:
    """The pod interface's IPv6 knobs (our DHCP IPAM only: a delegated IPAM owns IPv6)."""
    if conf.ipam is None or not conf.ipam.is_ours or conf.disable_container_interface:
        return ()
    return pod_ipv6_sysctls(conf.ipam.ipv6, conf.default_route)


def ipv6_on(conf: NetConf) -> bool:
    """Whether ADD looks for IPv6 on the pod's LAN (our DHCP IPAM, ``ipam.ipv6`` not off)."""
    ipam = conf.ipam
    return not (
        ipam is None or not ipam.is_ours or ipam.ipv6 == "off" or conf.disable_container_interface
    )


def find_slaac(
    netns_fd: int, ifname: str, up_at: float, timeout: float, ra_wait: float
) -> SlaacAddress | None:
    """The pod's SLAAC address, waited for ``ra_wait`` (ra_wait_for) from link-up; None
    when no RA came. Blocking."""
    slaac = wait_slaac(netns_fd, ifname, up_at, timeout, ra_wait)
    if slaac is None:
        # No RA on this LAN: IPv4 only, not an error.
        log.debug("%s: no IPv6 from an RA within %.1f s of link-up: IPv4 only", ifname, ra_wait)
    return slaac


async def slaac_add(
    conf: NetConf,
    ifname: str,
    netns_fd: int,
    addressing: PodAddressing,
    slaac: SlaacAddress | None,
) -> PodAddressing:
    """``addressing`` plus the pod's SLAAC address (from find_slaac) and IPv6 default route."""
    if slaac is None:
        return addressing
    routes = addressing.routes
    gateway6 = slaac.router
    if conf.default_route == "node":
        node = await node_default6(conf.bridge, netns_fd, ifname, "IPv6")
        gateway6 = node[0] if node else None
        routes = (*routes, node[1]) if node else routes
    elif conf.default_route == "none":
        gateway6 = None
    return dataclasses.replace(
        addressing,
        addresses=(*addressing.addresses, slaac.address),
        routes=routes,
        gateway6=gateway6,
    )


async def node_default6(
    bridge: str, netns_fd: int, ifname: str, what: str
) -> tuple[ipaddress.IPv6Address, PodRoute] | None:
    """The node's link-local on ``bridge`` and the pod's IPv6 default route via it
    (defaultRoute "node"), added in the pod; None, with a warning that the pod's ``what``
    has no default route, when the node has no link-local there. The SLAAC and the DHCPv6
    step use it."""
    gateway = await asyncio.to_thread(_node_gateway6, bridge)
    if gateway is None:
        log.warning(
            "%s: the node has no IPv6 link-local address on %s: the pod's %s has no default route",
            ifname,
            bridge,
            what,
        )
        return None
    route = PodRoute(DEFAULT6, gateway)
    await asyncio.to_thread(
        configure_pod, netns_fd, ifname, PodAddressing(addresses=(), routes=(route,))
    )
    return gateway, route


def _node_gateway6(bridge: str) -> ipaddress.IPv6Address | None:
    gateway = node_link_local(bridge)
    if gateway is not None:
        keep_node_ras(bridge)  # before forwarding goes on: it would drop the node's RAs
        enable_forwarding(True)
    return gateway
