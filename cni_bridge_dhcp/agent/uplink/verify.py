"""After a move the node must reach its default gateway: ARP (IPv4) or ND (IPv6) probes."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import time

from ...cni.errors import CNIError, ErrorCode
from ..datapath.arp import arp_probe
from ..datapath.netlink import (
    NUD_DELAY,
    NUD_FAILED,
    NUD_NOARP,
    NUD_PERMANENT,
    NUD_REACHABLE,
    NUD_STALE,
    Netlink,
    NetlinkError,
)
from .plan import AF_INET, AF_INET6, UplinkSnapshot, default_gateway, primary_ipv4

log = logging.getLogger(__name__)


def verify_gateway(
    ipr: Netlink, br_index: int, brname: str, snap: UplinkSnapshot, timeout: float
) -> None:
    """The node must reach its default gateway through the bridge, or the takeover is undone."""
    gw4 = default_gateway(snap.routes, AF_INET)
    gw6 = default_gateway(snap.routes, AF_INET6)
    if gw4 is None and gw6 is None:
        log.info("uplink %s had no default gateway; nothing to verify", snap.uplink)
        return
    gw = gw4 if gw4 is not None else gw6
    assert gw is not None
    # A link-local gateway is only meaningful with its interface (the bridge now).
    scoped = {"oif": br_index} if gw.is_link_local else {}
    got = ipr.route("get", dst=str(gw), **scoped)[0]
    oif = got.get_attr("RTA_OIF")
    if oif != br_index:
        raise CNIError(
            ErrorCode.UPLINK_FAILED,
            f"after takeover the route to gateway {gw} leaves via ifindex {oif}, not {brname}",
        )
    if isinstance(gw, ipaddress.IPv4Address):
        src = got.get_attr("RTA_PREFSRC") or str(primary_ipv4(snap.addresses) or "0.0.0.0")
        if not arp_probe(brname, snap.mac, ipaddress.IPv4Address(src), gw, timeout):
            raise CNIError(
                ErrorCode.UPLINK_FAILED,
                f"gateway {gw} does not answer ARP through bridge {brname} within {timeout:g}s",
            )
    elif not _nd_probe(ipr, br_index, gw, timeout + 2.0):
        raise CNIError(
            ErrorCode.UPLINK_FAILED,
            f"gateway {gw} is not reachable (neighbour discovery) through bridge {brname}",
        )
    log.info("gateway %s answers through bridge %s", gw, brname)


def _nd_probe(ipr: Netlink, br_index: int, gw: ipaddress.IPv6Address, timeout: float) -> bool:
    """Let the kernel resolve ``gw`` on the bridge (a datagram to the discard port triggers it)."""
    deadline = time.monotonic() + timeout
    scope = br_index if gw.is_link_local else 0
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        while time.monotonic() < deadline:
            # An entry learned from a router advertisement sits in STALE, and traffic
            # then waits in DELAY for delay_first_probe_time (5 s) before any probe:
            # dropped, the kernel resolves the gateway afresh (milliseconds).
            _forget_unconfirmed(ipr, br_index, gw)
            # Fails with no usable source address while DAD is still running: retried.
            with contextlib.suppress(OSError):
                sock.sendto(b"", (str(gw), 9, 0, scope))
            for _ in range(10):
                for m in ipr.neigh("dump", family=AF_INET6):
                    if (
                        m["ifindex"] == br_index
                        and m.get_attr("NDA_DST") == str(gw)
                        and m["state"] & (NUD_REACHABLE | NUD_PERMANENT | NUD_NOARP)
                    ):
                        return True
                time.sleep(0.05)
    return False


def _forget_unconfirmed(ipr: Netlink, index: int, gw: ipaddress.IPv6Address) -> None:
    for m in ipr.neigh("dump", family=AF_INET6):
        if (
            m["ifindex"] == index
            and m.get_attr("NDA_DST") == str(gw)
            and m["state"] & (NUD_STALE | NUD_DELAY | NUD_FAILED)
        ):
            with contextlib.suppress(NetlinkError):
                ipr.neigh("del", family=AF_INET6, dst=str(gw), ifindex=index)
