"""DHCPRELEASE for a pod that is already gone, sent from the node.

When a pod's namespace vanished before we could release its lease (the agent was down at
its DEL, or the runtime deleted the namespace without a DEL), nothing can be sent from
inside the pod any more. The agent still has everything a RELEASE needs: address, client
id, server id and the server's MAC (next hop). So the frame is built whole, as the pod
would have sent it (Ethernet source = the pod's MAC, IPv4 source = its address, UDP
68 -> 67), and written with a raw packet socket on the pod's bridge (its own L2 segment),
or, when that is unknown, on the node's interface towards the server. A packet socket bypasses routing and the node's firewall,
and the bridge does not learn source addresses from frames its own device transmits.

Nothing here waits for an answer: a server does not answer a RELEASE.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import logging
import os
import socket
from ipaddress import IPv4Address

from ..datapath.ifindex import ifreq, interface_exists
from ..datapath.netlink import NetlinkError, node_ipr
from . import codec
from .codec import BROADCAST, BROADCAST_MAC, ZERO
from .transport import ETH_P_IP, Received

log = logging.getLogger(__name__)


class NodeReleaseError(Exception):
    """No way to put the frame on the wire (no route to the server, socket refused)."""


def egress_interface(server: IPv4Address) -> str:
    """The node-side interface the kernel would use to reach ``server``."""
    with node_ipr() as ipr:
        try:
            routes = ipr.route("get", dst=str(server))
        except NetlinkError as exc:
            raise NodeReleaseError(f"no route to {server} on the node: {exc}") from exc
        for route in routes:
            oif = route.get_attr("RTA_OIF")
            if oif:
                return socket.if_indextoname(int(oif))
    raise NodeReleaseError(f"no route to {server} on the node")


def _ethernet(dst_mac: bytes, src_mac: bytes, packet: bytes) -> bytes:
    return dst_mac + src_mac + ETH_P_IP.to_bytes(2, "big") + packet


class NodeTransport:
    """A send-only ``Transport`` on a node interface, speaking as a departed pod (its MAC).

    Only what a RELEASE uses does anything: unicast (and broadcast) frames; no replies,
    no ARP probe.
    """

    mtu = 1500

    def __init__(self, ifname: str, pod_mac: str, kept: socket.socket | None = None) -> None:
        """Its own socket bound to ``ifname``, or the ``kept`` one (BridgeSender's), which
        it never closes. Each frame names ``ifname`` either way."""
        self.ifname = ifname
        self._src_mac = codec.mac_bytes(pod_mac)
        self._kept = kept is not None
        if kept is not None:
            self._sock = kept
            return
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        try:
            self._sock.bind((ifname, 0))
        except OSError:
            self._sock.close()
            raise

    def _send(self, dst_mac: bytes, packet: bytes) -> None:
        frame = _ethernet(dst_mac, self._src_mac, packet)
        try:
            self._sock.sendto(frame, (self.ifname, ETH_P_IP))
        except OSError as exc:
            raise NodeReleaseError(f"cannot send on {self.ifname}: {exc}") from exc

    async def send_broadcast(self, payload: bytes, *, src: IPv4Address = ZERO) -> None:
        self._send(
            BROADCAST_MAC, codec.build_ip_udp(payload, src=src, dst=BROADCAST, ident=_ident())
        )

    async def send_unicast(
        self, payload: bytes, *, src: IPv4Address, dst: IPv4Address, dst_mac: str | None
    ) -> None:
        # Without the server's MAC, an Ethernet broadcast still carries the unicast IPv4
        # packet to the server (it accepts it: the IP destination is its own).
        mac = codec.mac_bytes(dst_mac) if dst_mac else BROADCAST_MAC
        self._send(mac, codec.build_ip_udp(payload, src=src, dst=dst, ident=_ident()))

    async def recv(self, timeout: float) -> Received | None:
        await asyncio.sleep(0)
        return None

    async def arp_probe(self, address: IPv4Address, wait: float, probes: int) -> bool:
        return False

    def close(self) -> None:
        if not self._kept:
            self._sock.close()


SIOCGIFHWADDR = 0x8927


class BridgeSender:
    """The RELEASE of a DEL, written on the pod's bridge from one socket the agent keeps.

    It is the frame the pod would send (its MAC and address, to the server's MAC), so the
    LAN gets the same bytes. Sent from inside the pod instead, it cost four sockets opened
    in the pod's namespace (setns there and back, ioctls, a protocol hook, two trips to a
    worker thread): 1.2-2 ms of the agent's CPU per DEL of ~6 (perf-agent.py with the
    RELEASE left out, twice). The socket is unbound (protocol 0): it receives nothing,
    and each frame names its bridge, so a bridge re-created under the same name is found.

    No transport (the caller then sends from the pod) when the server's MAC is unknown, or
    is the bridge's own: a DHCP server on the node answers from the bridge's MAC, and a
    frame the bridge device sends to that MAC leaves by the port that owns it (the uplink)
    instead of reaching the node. Only for a pod's port on our bridge, which is untagged
    (vlan and vlanTrunk are refused at ADD): the bridge device's frames get the bridge's
    own VLAN, so a VLAN port would need the pod's path again.
    """

    def __init__(self) -> None:
        self._sock: socket.socket | None = None

    def transport(self, bridge: str, pod_mac: str, server_mac: str | None) -> NodeTransport | None:
        if not server_mac:
            return None
        try:
            if self._sock is None:
                self._sock = socket.socket(
                    socket.AF_PACKET,
                    socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
                    0,
                )
            hw = fcntl.ioctl(self._sock.fileno(), SIOCGIFHWADDR, ifreq(bridge))
        except OSError as exc:  # no such bridge (any more), or no descriptor left
            log.debug("RELEASE from the pod, not from %s: %s", bridge, exc)
            return None
        if hw[18:24] == codec.mac_bytes(server_mac):
            return None
        return NodeTransport(bridge, pod_mac, kept=self._sock)


async def open_node_transport(
    server: IPv4Address, pod_mac: str, bridge: str | None = None
) -> NodeTransport:
    """A NodeTransport on the pod's ``bridge`` (the pod's own L2 segment) if it still
    exists, else on the interface the node routes ``server`` through (a lease taken as
    IPAM for another plugin, or a record from before the bridge was journaled);
    NodeReleaseError if there is none."""

    def make() -> NodeTransport:
        ifname = bridge if bridge and interface_exists(bridge) else egress_interface(server)
        log.debug("RELEASE for a departed pod (%s) goes out on %s", pod_mac, ifname)
        try:
            return NodeTransport(ifname, pod_mac)
        except OSError as exc:
            raise NodeReleaseError(f"cannot open a packet socket on {ifname}: {exc}") from exc

    if ipaddress.IPv4Address(server).is_unspecified:
        raise NodeReleaseError("the lease has no server id")
    return await asyncio.to_thread(make)


def _ident() -> int:
    return int.from_bytes(os.urandom(2), "big")
