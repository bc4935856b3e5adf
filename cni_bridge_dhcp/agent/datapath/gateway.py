"""isGateway / isDefaultGateway / forceAddress with a delegated IPAM, as the reference.

The reference ``bridge`` plugin (containernetworking-plugins ``calcGateways`` and
``ensureAddr``):

- isDefaultGateway implies isGateway;
- with isGateway, an IPAM address without a gateway gets the first address of its subnet;
- with isDefaultGateway, each family gets ``default via <gateway>`` unless the IPAM result
  already has a default route with a gateway for it (then the IPAM's route wins, silently);
- with isGateway, each gateway goes on the bridge with the pod's prefix length and forwarding
  is enabled for its family. An IPv4 address already on the bridge that differs, or an IPv6
  one whose subnet overlaps, is an error, unless forceAddress: then it is removed first.

Only for delegated IPAM: with our DHCP IPAM the gateway is the LAN router, whose address
must never go on the node's bridge (config.py refuses these keys there).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from ...cni.errors import CNIError, ErrorCode
from .netlink import EEXIST, NetlinkError, lookup, node_ipr
from .podroutes import IPAddress, IPInterface, PodRoute
from .sysctl import write_sysctl

log = logging.getLogger(__name__)

_DEFAULT = {
    4: ipaddress.ip_network("0.0.0.0/0"),
    6: ipaddress.ip_network("::/0"),
}


@dataclass(frozen=True)
class GatewayPlan:
    # gateway per pod address (same order), None where IPAM gave none and isGateway is off
    gateways: tuple[IPAddress | None, ...]
    # default routes isDefaultGateway adds (after the IPAM's routes)
    extra_routes: tuple[PodRoute, ...]
    # addresses for the bridge (gateway with the pod's prefix length), v4 first
    bridge_addresses: tuple[IPInterface, ...]


def plan_gateways(
    addresses: tuple[IPInterface, ...],
    gateways: tuple[IPAddress | None, ...],
    ipam_routes: tuple[PodRoute, ...],
    *,
    is_gateway: bool,
    is_default_gateway: bool,
) -> GatewayPlan:
    is_gateway = is_gateway or is_default_gateway
    out_gws: list[IPAddress | None] = []
    extra: list[PodRoute] = []
    bridge: list[IPInterface] = []
    has_default = {
        v: any(r.gw is not None and r.dst == _DEFAULT[v] for r in ipam_routes) for v in (4, 6)
    }
    for addr, gw in zip(addresses, gateways, strict=True):
        if gw is None and is_gateway:
            # calcGatewayIP: the address after the network address
            gw = addr.network.network_address + 1
        out_gws.append(gw)
        if is_default_gateway and not has_default[addr.version] and gw is not None:
            extra.append(PodRoute(_DEFAULT[addr.version], gw))
            has_default[addr.version] = True
        if is_gateway and gw is not None:
            bridge.append(ipaddress.ip_interface(f"{gw}/{addr.network.prefixlen}"))
    bridge.sort(key=lambda i: i.version)
    return GatewayPlan(tuple(out_gws), tuple(extra), tuple(bridge))


def _conflicts(existing: IPInterface, wanted: IPInterface) -> bool:
    if existing.version != wanted.version:
        return False
    if existing.version == 4:
        return True
    if existing.ip.is_link_local:
        return False
    return existing.ip in wanted.network or wanted.ip in existing.network


def ensure_bridge_addresses(bridge: str, wanted: tuple[IPInterface, ...], force: bool) -> None:
    """Put the gateway addresses on ``bridge`` (node namespace) and enable forwarding."""
    if not wanted:
        return
    with node_ipr() as ipr:
        index = lookup(ipr, bridge)
        if index is None:
            raise CNIError(ErrorCode.IO_FAILURE, f"bridge {bridge} vanished during ADD")
        for want in wanted:
            present = [
                ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
                for a in ipr.get_addr(index=index, family=6 if want.version == 6 else 2)
            ]
            if want in present:
                continue
            for old in present:
                if not _conflicts(old, want):
                    continue
                if not force:
                    raise CNIError(
                        ErrorCode.INVALID_CONFIG,
                        f"isGateway: bridge {bridge} already has {old}, "
                        f"different from the gateway {want}",
                        "set forceAddress to replace it, or use another bridge",
                    )
                log.warning("forceAddress: removing %s from bridge %s for %s", old, bridge, want)
                ipr.addr("del", index=index, address=str(old.ip), prefixlen=old.network.prefixlen)
            try:
                ipr.addr("add", index=index, address=str(want.ip), prefixlen=want.network.prefixlen)
            except NetlinkError as exc:
                if exc.code != EEXIST:
                    raise CNIError(
                        ErrorCode.IO_FAILURE, f"adding {want} to bridge {bridge} failed: {exc}"
                    ) from None
    for version in {w.version for w in wanted}:
        knob = "net/ipv4/ip_forward" if version == 4 else "net/ipv6/conf/all/forwarding"
        if write_sysctl(knob, "1"):
            log.info("isGateway: %s=1 in the node namespace", knob.replace("/", "."))
