"""The few changes the DHCP client itself makes on a pod interface: when a lease is lost,
its address comes off (RFC 2131 4.4.5: the client must stop using it); when the lease is
regained, the address goes back on. Routes and everything else are the plugin's."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from ipaddress import IPv4Interface

from ...errors import CNIError
from ..netlink import NetlinkError, ipr_for_netns
from ..netns import netns_inode, open_netns, run_in_netns
from .lease import Lease

log = logging.getLogger(__name__)


def _change_address(lease: Lease, iface: IPv4Interface, add: bool) -> None:
    fd = open_netns(lease.netns_path)
    try:
        if netns_inode(fd) != lease.netns_inode:
            return
        index = run_in_netns(fd, lambda: socket.if_nametoindex(lease.ifname))
        ipr = ipr_for_netns(fd)
        try:
            if add:
                ipr.addr(
                    "replace", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen
                )
                return
            for msg in ipr.get_addr(family=socket.AF_INET, index=index):
                if msg.get_attr("IFA_ADDRESS") == str(iface.ip):
                    ipr.addr("del", index=index, address=str(iface.ip), prefixlen=msg["prefixlen"])
        finally:
            ipr.close()
    finally:
        os.close(fd)


async def remove_address(lease: Lease) -> None:
    try:
        await asyncio.to_thread(_change_address, lease, lease.address, False)
    except (OSError, NetlinkError, CNIError) as exc:
        log.warning(
            "%s: could not remove %s from %s: %s", lease.key, lease.address, lease.ifname, exc
        )


async def add_address(lease: Lease) -> None:
    try:
        await asyncio.to_thread(_change_address, lease, lease.address, True)
    except (OSError, NetlinkError, CNIError) as exc:
        log.warning("%s: could not add %s to %s: %s", lease.key, lease.address, lease.ifname, exc)
