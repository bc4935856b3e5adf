"""ARP packets (RFC 826), and a raw request/reply probe on one interface.

Shared by the DHCP client's address-conflict probe (RFC 5227, ``dhcp/transport.py``) and
the uplink takeover's check that the gateway answers through the bridge.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from ipaddress import IPv4Address

ETH_P_ARP = 0x0806
ARP_REQUEST = 1
ARP_REPLY = 2
_HTYPE_ETHERNET = 1
_PTYPE_IPV4 = 0x0800
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_BROADCAST = b"\xff" * 6
_RESEND = 0.3  # seconds between requests while no reply came


@dataclass(frozen=True)
class Arp:
    op: int
    sha: bytes
    spa: IPv4Address
    tha: bytes
    tpa: IPv4Address


def build_arp(op: int, sha: bytes, spa: IPv4Address, tha: bytes, tpa: IPv4Address) -> bytes:
    return _ARP.pack(_HTYPE_ETHERNET, _PTYPE_IPV4, 6, 4, op, sha, spa.packed, tha, tpa.packed)


def parse_arp(packet: bytes) -> Arp | None:
    """The ARP request or reply in ``packet`` (Ethernet/IPv4 only), else None."""
    if len(packet) < _ARP.size:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(packet)
    if (
        htype != _HTYPE_ETHERNET
        or ptype != _PTYPE_IPV4
        or hlen != 6
        or plen != 4
        or op not in (ARP_REQUEST, ARP_REPLY)
    ):
        return None
    return Arp(op, sha, IPv4Address(spa), tha, IPv4Address(tpa))


def arp_probe(ifname: str, mac: str, src: IPv4Address, target: IPv4Address, timeout: float) -> bool:
    """Ask ``target`` for its MAC on ``ifname`` (raw ARP, retried); True once it answers.

    Our own request rather than the kernel's neighbour machinery: a neighbour entry can sit
    in STALE/DELAY for seconds without a fresh confirmation, ARP answers in milliseconds.
    """
    request = build_arp(ARP_REQUEST, bytes.fromhex(mac.replace(":", "")), src, bytes(6), target)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((ifname, ETH_P_ARP))
        next_send = 0.0
        while (now := time.monotonic()) < deadline:
            if now >= next_send:
                sock.sendto(request, (ifname, ETH_P_ARP, 0, 0, _BROADCAST))
                next_send = now + _RESEND
            # A socket timeout (poll), not select(): the agent raises its open-file limit and
            # select() fails on descriptors numbered 1024 and above.
            sock.settimeout(max(0.001, min(next_send, deadline) - now))
            try:
                reply = parse_arp(sock.recv(128))
            except TimeoutError:
                continue
            if reply is not None and reply.op == ARP_REPLY and reply.spa == target:
                return True
    return False
