"""The pod-side kernel work of DHCPv6: the RA flags and on-link prefixes the pod learned,
and the leased address on the pod interface with the lease's lifetimes (the kernel itself
drops it when the valid lifetime runs out, even if the agent is down)."""

from __future__ import annotations

import logging
import os
from ipaddress import IPv6Address, IPv6Interface, IPv6Network

from ....cni.errors import CNIError
from ...datapath.netlink import RT_TABLE_MAIN, NetlinkError, netns_ipr
from ...datapath.netns import netns_inode, open_netns
from ...datapath.rtnl import inet6_flags, rtnl_in

log = logging.getLogger(__name__)

AF_INET6 = 10
RTPROT_KERNEL = 2
RTPROT_RA = 9
# linux/if_link.h
IF_RA_RCVD = 0x20  # an RA came
IF_RA_MANAGED = 0x40  # the last RA had the M flag
IFA_F_NODAD = 0x02


def ra_flags(netns_fd: int | None, ifname: str) -> int:
    """The IPv6 RA flags of ``ifname`` (in the namespace ``netns_fd``, None: the node's):
    IF_RA_RCVD once any RA came, IF_RA_MANAGED when the last one had the M flag."""
    with rtnl_in(netns_fd) as rt:
        link = rt.get_link(name=ifname)
        return inet6_flags(link) if link is not None else 0


def ra_managed(netns_fd: int | None, ifname: str) -> bool:
    """Whether the last router advertisement ``ifname`` received had the M flag."""
    return bool(ra_flags(netns_fd, ifname) & IF_RA_MANAGED)


def onlink_prefixlen(netns_fd: int, ifname: str, address: IPv6Address) -> int:
    """The length of the RA-announced on-link prefix covering ``address``, else 128."""
    with netns_ipr(netns_fd) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return 128
        best = 128
        for r in ipr.get_routes(family=AF_INET6, oif=found[0], table=RT_TABLE_MAIN):
            # An RA's on-link prefix is a gatewayless route, "proto ra" on recent kernels,
            # "proto kernel" (with an expiry) when SLAAC configured an address in it.
            if r["proto"] not in (RTPROT_KERNEL, RTPROT_RA) or r.get_attr("RTA_GATEWAY"):
                continue
            if not 0 < r["dst_len"] < 128:
                continue
            net = IPv6Network(f"{r.get_attr('RTA_DST')}/{r['dst_len']}")
            if address in net and not net.is_link_local:
                best = min(best, net.prefixlen)
        return best


def set_address(
    netns_fd: int, ifname: str, address: IPv6Interface, preferred: int, valid: int
) -> None:
    """Put (or refresh the lifetimes of) the leased address; no DAD: the server assigned it."""
    with netns_ipr(netns_fd) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise NetlinkError(19, f"{ifname} is gone")
        ipr.addr(
            "replace",
            index=found[0],
            family=AF_INET6,
            address=str(address.ip),
            prefixlen=address.network.prefixlen,
            flags=IFA_F_NODAD,
            preferred_lft=preferred,
            valid_lft=valid,
        )


def remove_address(netns_fd: int, ifname: str, address: IPv6Interface) -> None:
    with netns_ipr(netns_fd) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return
        try:
            ipr.addr(
                "del",
                index=found[0],
                family=AF_INET6,
                address=str(address.ip),
                prefixlen=address.network.prefixlen,
            )
        except NetlinkError as exc:
            if exc.code not in (99, 19):  # EADDRNOTAVAIL, ENODEV: already gone
                raise


def has_address(netns_fd: int, ifname: str, address: IPv6Address) -> bool:
    with netns_ipr(netns_fd) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return False
        return any(
            a.get_attr("IFA_ADDRESS") == str(address)
            for a in ipr.get_addr(family=AF_INET6, index=found[0])
        )


def open_pod(netns_path: str, inode: int) -> int | None:
    """An fd of the pod's namespace if ``netns_path`` still names it (caller closes)."""
    try:
        fd = open_netns(netns_path)
    except (FileNotFoundError, CNIError):
        return None
    if netns_inode(fd) != inode:
        os.close(fd)
        return None
    return fd
