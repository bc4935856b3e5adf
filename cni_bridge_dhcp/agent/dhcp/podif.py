"""The few changes the DHCP client itself makes on a pod interface: when a lease is lost,
its address comes off (RFC 2131 4.4.5: the client must stop using it); when the lease is
regained, or the server hands out another address at renewal, the address goes (back) on.

Routes are the plugin's, but removing an interface's last IPv4 address makes the kernel
drop every IPv4 route through it (and a secondary address goes with its primary). So the
interface's own routes (everything but the kernel's prefix routes) are read before an
address comes off and put back once an address is on again: after a swap at once, after a
loss when the lease is regained (kept in memory until then, per attachment and namespace).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from dataclasses import dataclass
from ipaddress import IPv4Interface

from ...cni.errors import CNIError
from ..datapath.ifindex import interface_index
from ..datapath.netlink import Netlink, NetlinkError, ipr_for_netns
from ..datapath.netns import netns_inode, open_netns, run_in_netns
from .lease import Lease

log = logging.getLogger(__name__)

RTPROT_KERNEL = 2
RT_TABLE_MAIN = 254


@dataclass(frozen=True)
class _Route:
    dst: str | None  # None: default route
    dst_len: int
    gateway: str | None
    scope: int
    proto: int
    priority: int | None


# key -> (netns inode, routes) of leases lost and not yet regained
_saved: dict[str, tuple[int, tuple[_Route, ...]]] = {}


def _capture(ipr: Netlink, index: int) -> tuple[_Route, ...]:
    routes = []
    for msg in ipr.get_routes(family=socket.AF_INET, table=RT_TABLE_MAIN):
        if msg.get_attr("RTA_OIF") != index or msg["proto"] == RTPROT_KERNEL:
            continue
        routes.append(
            _Route(
                dst=msg.get_attr("RTA_DST"),
                dst_len=msg["dst_len"],
                gateway=msg.get_attr("RTA_GATEWAY"),
                scope=msg["scope"],
                proto=msg["proto"],
                priority=msg.get_attr("RTA_PRIORITY"),
            )
        )
    return tuple(routes)


def _restore(ipr: Netlink, index: int, routes: tuple[_Route, ...], key: str) -> None:
    # On-link routes first: a gateway must be reachable when its route goes in.
    for route in sorted(routes, key=lambda r: (r.gateway is not None, -r.dst_len)):
        spec: dict[str, str | int] = {
            "dst": route.dst or "0.0.0.0",
            "dst_len": route.dst_len,
            "oif": index,
            "scope": route.scope,
            "proto": route.proto,
            "table": RT_TABLE_MAIN,
        }
        if route.gateway:
            spec["gateway"] = route.gateway
        if route.priority is not None:
            spec["priority"] = route.priority
        try:
            ipr.route("replace", **spec)
        except NetlinkError as exc:
            log.warning("%s: could not restore route %s/%d: %s", key, route.dst, route.dst_len, exc)


def _change(
    lease: Lease, remove: IPv4Interface | None, add: IPv4Interface | None, *, regained: bool
) -> None:
    fd = open_netns(lease.netns_path)
    try:
        if netns_inode(fd) != lease.netns_inode:
            return
        found = run_in_netns(fd, lambda: interface_index(lease.ifname))
        if found is None:
            raise OSError(errno.ENODEV, f"{lease.ifname} is gone")
        index = found
        ipr = ipr_for_netns(fd)
        try:
            routes: tuple[_Route, ...] = ()
            if remove is not None:
                routes = _capture(ipr, index)
                for msg in ipr.get_addr(family=socket.AF_INET, index=index):
                    if msg.get_attr("IFA_ADDRESS") == str(remove.ip):
                        ipr.addr(
                            "del", index=index, address=str(remove.ip), prefixlen=msg["prefixlen"]
                        )
            if add is None:
                if routes:
                    _saved[lease.key] = (lease.netns_inode, routes)
                return
            ipr.addr("replace", index=index, address=str(add.ip), prefixlen=add.network.prefixlen)
            if regained:
                inode, kept = _saved.pop(lease.key, (0, ()))
                if inode == lease.netns_inode:
                    routes = kept
            if routes:
                _restore(ipr, index, routes, lease.key)
        finally:
            ipr.close()
    finally:
        os.close(fd)


async def _run(
    what: str,
    lease: Lease,
    remove: IPv4Interface | None,
    add: IPv4Interface | None,
    *,
    regained: bool,
) -> None:
    try:
        await asyncio.to_thread(_change, lease, remove, add, regained=regained)
    except (OSError, NetlinkError, CNIError) as exc:
        log.warning("%s: could not %s on %s: %s", lease.key, what, lease.ifname, exc)


async def remove_address(lease: Lease) -> None:
    """The lease is lost: its address comes off; the routes are kept for add_address."""
    await _run(f"remove {lease.address}", lease, lease.address, None, regained=False)


async def add_address(lease: Lease) -> None:
    """The lease is regained: its address goes on, and the routes the loss took come back."""
    await _run(f"add {lease.address}", lease, None, lease.address, regained=True)


async def change_address(old: Lease, new: Lease) -> None:
    """The server moved us to another address: swap it, keeping the routes."""
    await _run(
        f"change {old.address} to {new.address}", new, old.address, new.address, regained=False
    )


def forget(key: str) -> None:
    """The attachment is gone: drop any routes kept for it."""
    _saved.pop(key, None)
