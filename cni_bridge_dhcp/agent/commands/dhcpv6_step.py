"""ADD's stateful IPv6 step: a DHCPv6 (IA_NA) lease for the pod, when ``ipam.dhcpv6`` is
true, or absent and the RA the pod received has the M flag (runs after the SLAAC step,
which has waited for that RA). The address goes on the pod interface with its lifetimes
and into the result with the RA's on-link prefix length (else /128); the IPv6 default
route is the SLAAC step's (via the node's link-local in "node" mode), added here when
SLAAC gave none; DNS from options 23/24 is appended to the DHCPv4 lease's."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..config import NetConf
from ..datapath.podroutes import PodAddressing
from ..datapath.slaac import QUIET_LAN_WAIT, ra_wait_for
from ..dhcp.identity import stable_mac_for
from ..dhcp.v6 import podaddr
from ..dhcp.v6.client import Bound6
from ..dhcp.v6.identity import duid_ll, iaid_for
from ..dhcp.v6.lease import Lease6, Lease6Request, Lease6State
from .common import pod_ids
from .slaac_step import DEFAULT6, ipv6_on, node_default6
from .types import Request, Services

log = logging.getLogger(__name__)

Undo = Callable[[], Awaitable[None]]


def wants_dhcpv6(
    conf: NetConf,
    netns_fd: int,
    ifname: str,
    up_at: float,
    lan_ras: bool = False,
    ra_wait: float | None = None,
) -> bool:
    """``ipam.dhcpv6``, else the M flag of the RA the pod received. When none came yet but
    the node has learned from RAs on this LAN, the pod's RA is late, not missing: it is
    waited for as long as the SLAAC step would (slaac.ra_wait_for, from link-up), since on
    a managed LAN without an autonomous prefix that step had no address to wait for.
    ``ra_wait``: what ra_wait_for said before the SLAAC step; asked again unless it was 0
    (a LAN quiet for long, and no time has passed since)."""
    ipam = conf.ipam
    if ipam is None or not ipv6_on(conf):
        return False
    if ipam.dhcpv6 is not None:
        return ipam.dhcpv6
    flags = podaddr.ra_flags(netns_fd, ifname)
    if ra_wait is None or ra_wait > 0:
        ra_wait = ra_wait_for(conf.bridge, lan_ras)
    if not flags & podaddr.IF_RA_RCVD and ra_wait > QUIET_LAN_WAIT:
        end = up_at + min(ra_wait, ipam.timeout)
        while not flags & podaddr.IF_RA_RCVD and time.monotonic() < end:
            time.sleep(0.05)
            flags = podaddr.ra_flags(netns_fd, ifname)
    return bool(flags & podaddr.IF_RA_MANAGED)


async def dhcpv6_add(
    services: Services,
    conf: NetConf,
    req: Request,
    key: str,
    netns_fd: int,
    addressing: PodAddressing,
    dns: dict[str, Any],
    undo: list[Undo],
    wanted: bool,
) -> tuple[PodAddressing, dict[str, Any]]:
    """``addressing`` and ``dns`` with the pod's DHCPv6 lease added, if it wants one
    (``wanted``: wants_dhcpv6, asked by the caller with its other blocking reads)."""
    if not wanted:
        return addressing, dns
    assert conf.ipam is not None
    pod_ns, pod_name = pod_ids(req)
    leases6 = services.leases6
    pod = (pod_ns, pod_name, req.container_id, conf.name, req.ifname)
    duid = duid_ll(stable_mac_for(*pod))
    if leases6.duid_in_use(duid, key):
        # another live sandbox of the pod holds its identity: as claim_identity does for v4
        duid = duid_ll(stable_mac_for(*pod, per_sandbox=True))
    request = Lease6Request(
        key=key,
        netns_path=req.netns,
        netns_fd=netns_fd,
        ifname=req.ifname,
        duid=duid,
        iaid=iaid_for(duid),
        timeout=conf.ipam.timeout,
        meta={"network": conf.name, "containerId": req.container_id},
    )

    async def prefixlen_of(bound: Bound6) -> int:
        return await asyncio.to_thread(
            podaddr.onlink_prefixlen, netns_fd, req.ifname, bound.address
        )

    lease = await leases6.acquire(request, prefixlen_of)

    async def release() -> None:
        await leases6.release(key)

    undo.append(release)
    now = services.leases6.clock.time()
    preferred, valid = lease.lifetimes_at(now)
    await asyncio.to_thread(
        podaddr.set_address, netns_fd, req.ifname, lease.address, preferred, valid
    )
    routes = addressing.routes
    gateway6 = addressing.gateway6
    if conf.default_route == "node" and not any(
        r.dst == DEFAULT6 for r in routes if isinstance(r.dst, ipaddress.IPv6Network)
    ):
        node = await node_default6(conf.bridge, netns_fd, req.ifname, "DHCPv6 address")
        gateway6 = node[0] if node else None
        routes = (*routes, node[1]) if node else routes
    log.info("%s: DHCPv6 address %s from server %s", key, lease.address, lease.server)
    return (
        dataclasses.replace(
            addressing,
            addresses=(*addressing.addresses, lease.address),
            routes=routes,
            gateway6=gateway6,
        ),
        merge_dns(dns, lease),
    )


def dhcpv6_drift(services: Services, key: str) -> list[str]:
    """CHECK: a DHCPv6 lease that ended (its address is checked with the result's ips)."""
    lease = services.leases6.get(key)
    if lease is not None and lease.state == Lease6State.EXPIRED:
        return [f"the DHCPv6 lease of {lease.address.ip} for {key} has ended"]
    return []


def merge_dns(dns: dict[str, Any], lease: Lease6) -> dict[str, Any]:
    """The DHCPv4 lease's DNS first, then the DHCPv6 servers and search domains it lacks."""
    servers = list(dns.get("nameservers") or [])
    servers += [str(s) for s in lease.dns_servers if str(s) not in servers]
    search = list(dns.get("search") or [])
    search += [d for d in lease.domains if d not in search]
    merged = dict(dns)
    merged["nameservers"] = servers
    merged["search"] = search
    return merged
