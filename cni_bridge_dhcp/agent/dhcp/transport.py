"""Packet I/O for one DHCP transaction on a pod interface.

All sockets are created inside the pod's network namespace (a socket keeps the namespace it
was created in) and bound to the pod interface, so frames leave with the pod's MAC and the
server sees the pod. Then they are plain nonblocking sockets on the agent's event loop.

- an AF_PACKET/SOCK_DGRAM socket for IPv4 with a BPF filter for UDP port 68 receives every
  reply (broadcast, or unicast to an address the pod has not configured yet) and sends
  broadcasts, and unicasts to the server's MAC when we know it (RENEW, RELEASE): that works
  whatever routes and addresses the pod has;
- an AF_PACKET socket for ARP runs the RFC 5227 probe;
- a UDP socket bound to the leased address:68 on the interface sends unicasts when the
  server's MAC is unknown (the kernel routes and resolves it).

Transports are short-lived (one per transaction) so that an idle lease pins neither the
pod's namespace nor any socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Protocol, TypeVar

from ...cni.errors import CNIError
from ..datapath.arp import ARP_REQUEST, Arp, build_arp, parse_arp
from ..datapath.ifindex import ifreq, interface_exists, interface_index
from ..datapath.netns import netns_inode, open_netns, run_in_netns
from ..runtime.fdlimits import is_fd_exhaustion
from . import codec
from .codec import BROADCAST, BROADCAST_MAC, CLIENT_PORT, SERVER_PORT, ZERO

log = logging.getLogger(__name__)

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
IP_FREEBIND = 15
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCGIFMTU = 0x8921
SIOCGIFHWADDR = 0x8927
IFF_UP = 0x1
IFF_RUNNING = 0x40
_QUEUE_MAX = 64

# Classic BPF on a SOCK_DGRAM packet socket (offset 0 is the IPv4 header): accept
# unfragmented UDP to port 68, drop everything else before it is queued to us.
_BPF_UDP_DPORT_68 = (
    (0x30, 0, 0, 9),  # ldb [9]            protocol
    (0x15, 0, 6, 17),  # jeq #17 ?: drop
    (0x28, 0, 0, 6),  # ldh [6]            flags + fragment offset
    (0x45, 4, 0, 0x1FFF),  # jset #0x1fff -> drop
    (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf)   header length
    (0x48, 0, 0, 2),  # ldh [x+2]          UDP destination port
    (0x15, 0, 1, CLIENT_PORT),  # jeq #68 ?: drop
    (0x06, 0, 0, 0x40000),  # ret: accept
    (0x06, 0, 0, 0),  # drop
)


# The ARP socket only serves arp_probe, which looks for one thing: a frame whose sender
# address is the one being probed. Outside a probe it drops everything; during one it
# passes only that (SOCK_DGRAM: the data starts at the ARP header; sender IP at byte 14).
# Unfiltered, every pod's socket woke the agent for every ARP frame on the LAN: in a burst
# of N concurrent ADDs, N probing pods times N sockets, parsed in Python and thrown away.
_BPF_DROP = ((0x06, 0, 0, 0),)


def _bpf_arp_sender(address: IPv4Address) -> tuple[tuple[int, int, int, int], ...]:
    return (
        (0x28, 0, 0, 2),  # ldh [2]            protocol type
        (0x15, 0, 3, 0x0800),  # jeq IPv4 ?: drop
        (0x20, 0, 0, 14),  # ld [14]            sender protocol address
        (0x15, 0, 1, int(address)),  # jeq address ?: drop
        (0x06, 0, 0, 0x40000),  # ret: accept
        (0x06, 0, 0, 0),  # drop
    )


class Gone(Exception):
    """The pod's namespace or interface no longer exists (or is a different one)."""


_T = TypeVar("_T")


def in_pod_netns(
    netns_fd: int | None, netns_path: str, inode: int | None, make: Callable[[], _T]
) -> _T:
    """``make()`` run in the pod's namespace: ADD's pinned ``netns_fd``, else ``netns_path``
    (opened and closed here). Gone when the path is gone or, with ``inode``, now names
    another namespace. The DHCPv4 and DHCPv6 (v6/transport.py) sockets are made so."""
    fd = netns_fd
    own = False
    if fd is None:
        try:
            fd = open_netns(netns_path)
        except (FileNotFoundError, CNIError) as exc:
            raise Gone(f"netns {netns_path} is gone") from exc
        own = True
    try:
        if inode is not None and netns_inode(fd) != inode:
            raise Gone(f"netns {netns_path} is a different namespace now")
        return run_in_netns(fd, make)
    finally:
        if own:
            os.close(fd)


@dataclass(frozen=True)
class Received:
    payload: bytes
    src_ip: IPv4Address
    src_mac: str | None


@dataclass(frozen=True)
class Target:
    """Where a transaction runs: the pod namespace (by fd, or by path + expected inode)."""

    netns_path: str
    ifname: str
    mac: str
    netns_fd: int | None = None
    netns_inode: int | None = None


class Transport(Protocol):
    mtu: int

    async def send_broadcast(self, payload: bytes, *, src: IPv4Address = ZERO) -> None: ...

    async def send_unicast(
        self, payload: bytes, *, src: IPv4Address, dst: IPv4Address, dst_mac: str | None
    ) -> None: ...

    async def recv(self, timeout: float) -> Received | None: ...

    async def arp_probe(self, address: IPv4Address, wait: float, probes: int) -> bool:
        """True if another host answers for (or probes for) ``address`` within ``wait``.

        Only on a transport opened without ``unicast_from``: the renewing and releasing
        ones never probe, and carry no ARP socket."""
        ...

    def close(self) -> None: ...


class TransportFactory(Protocol):
    async def open(
        self, target: Target, *, bring_up: bool = False, unicast_from: IPv4Address | None = None
    ) -> Transport: ...

    async def exists(self, target: Target) -> bool:
        """Whether the namespace (same inode) and the interface are still there."""
        ...


def _attach_filter(sock: socket.socket, program: tuple[tuple[int, int, int, int], ...]) -> None:
    insns = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(insns)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _get_flags(ctl: socket.socket, ifname: str) -> int:
    res = fcntl.ioctl(ctl.fileno(), SIOCGIFFLAGS, ifreq(ifname))
    return int(struct.unpack_from("H", res, 16)[0])


@dataclass
class _Sockets:
    ctl: socket.socket
    ip: socket.socket
    arp: socket.socket | None
    udp: socket.socket | None
    ifindex: int
    hwaddr: str
    mtu: int


def _make_sockets(ifname: str, bring_up: bool, unicast_from: IPv4Address | None) -> _Sockets:
    """Runs inside the pod namespace (``run_in_netns``)."""
    opened: list[socket.socket] = []
    try:
        ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        opened.append(ctl)
        found = interface_index(ifname, ctl)
        if found is None:
            raise Gone(f"interface {ifname} not found")
        ifindex = found
        flags = _get_flags(ctl, ifname)
        if bring_up and not flags & IFF_UP:
            fcntl.ioctl(ctl.fileno(), SIOCSIFFLAGS, ifreq(ifname, struct.pack("H", flags | IFF_UP)))
        hw = fcntl.ioctl(ctl.fileno(), SIOCGIFHWADDR, ifreq(ifname))
        hwaddr = codec.mac_str(hw[18:24])
        mtu = int(
            struct.unpack_from("i", fcntl.ioctl(ctl.fileno(), SIOCGIFMTU, ifreq(ifname)), 16)[0]
        )

        # Protocol 0 until the filter is in place, so nothing unfiltered is ever queued.
        ip = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
        opened.append(ip)
        _attach_filter(ip, _BPF_UDP_DPORT_68)
        ip.bind((ifname, ETH_P_IP))
        ip.setblocking(False)

        arp = None
        if unicast_from is None:
            # Only transports that may probe get one: a renewal or a release (unicast, from
            # a bound address) never does, and each packet socket costs a protocol hook.
            # Protocol 0 again: binding a socket whose protocol hook is already registered
            # costs an RCU grace period (~10 ms) to unregister it first.
            arp = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
            opened.append(arp)
            _attach_filter(arp, _BPF_DROP)  # arp_probe opens it for the probed address
            arp.bind((ifname, ETH_P_ARP))
            arp.setblocking(False)

        udp = None
        if unicast_from is not None:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            try:
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
                udp.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
                udp.bind((str(unicast_from), CLIENT_PORT))
                udp.setblocking(False)
            except OSError as exc:
                log.debug(
                    "no UDP socket on %s:%d in %s: %s", unicast_from, CLIENT_PORT, ifname, exc
                )
                udp.close()
                udp = None
        if udp is not None:
            opened.append(udp)
    except Gone:
        for sock in opened:
            sock.close()
        raise
    except OSError as exc:
        for sock in opened:
            sock.close()
        if exc.errno in (errno.ENODEV, errno.ENXIO):
            raise Gone(f"interface {ifname} vanished") from exc
        raise
    return _Sockets(ctl, ip, arp, udp, ifindex, hwaddr, mtu)


class PodTransport:
    def __init__(self, target: Target, socks: _Sockets) -> None:
        self.target = target
        self.hwaddr = socks.hwaddr
        self.mtu = socks.mtu
        self._s = socks
        self._mac = codec.mac_bytes(target.mac)
        self._loop = asyncio.get_running_loop()
        self._rx: asyncio.Queue[Received] = asyncio.Queue(_QUEUE_MAX)
        self._arp_rx: asyncio.Queue[Arp] = asyncio.Queue(_QUEUE_MAX)
        self._closed = False
        # One receive buffer per transport: a fresh 64 KiB buffer per packet would be an
        # mmap/munmap pair under the agent's malloc settings (agent/runtime/allocator.py).
        self._buffer = bytearray(65535)
        self._loop.add_reader(socks.ip.fileno(), self._on_ip)
        if socks.arp is not None:
            self._loop.add_reader(socks.arp.fileno(), self._on_arp)

    # -- receive -------------------------------------------------------------------------

    def _drain(
        self, sock: socket.socket, handle: Callable[[bytes, tuple[object, ...]], None]
    ) -> None:
        view = memoryview(self._buffer)
        for _ in range(_QUEUE_MAX):
            try:
                size, addr = sock.recvfrom_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("%s: receive error %s", self.target.ifname, exc)
                return
            if len(addr) >= 3 and addr[2] == PACKET_OUTGOING:
                continue
            handle(bytes(view[:size]), addr)

    def _on_ip(self) -> None:
        def handle(data: bytes, addr: tuple[object, ...]) -> None:
            dgram = codec.parse_ip_udp(data)
            if dgram is None or dgram.dport != CLIENT_PORT:
                return
            src_mac = addr[4] if len(addr) >= 5 and isinstance(addr[4], bytes) else b""
            rx = Received(
                dgram.payload, dgram.src, codec.mac_str(src_mac) if len(src_mac) == 6 else None
            )
            if not self._rx.full():
                self._rx.put_nowait(rx)

        self._drain(self._s.ip, handle)

    def _on_arp(self) -> None:
        def handle(data: bytes, addr: tuple[object, ...]) -> None:
            arp = parse_arp(data)
            if arp is not None and not self._arp_rx.full():
                self._arp_rx.put_nowait(arp)

        if self._s.arp is not None:
            self._drain(self._s.arp, handle)

    async def recv(self, timeout: float) -> Received | None:
        if not self._rx.empty():
            return self._rx.get_nowait()
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self._rx.get(), timeout)
        except TimeoutError:
            return None

    # -- send ----------------------------------------------------------------------------

    def _send_frame(self, frame: bytes, proto: int, dst_mac: bytes, sock: socket.socket) -> None:
        try:
            sock.sendto(frame, (self.target.ifname, proto, 0, 0, dst_mac))
        except OSError as exc:
            # A lost packet: the retransmission schedule covers it.
            log.debug("%s: send failed: %s", self.target.ifname, exc)

    async def send_broadcast(self, payload: bytes, *, src: IPv4Address = ZERO) -> None:
        frame = codec.build_ip_udp(payload, src=src, dst=BROADCAST, ident=_ident())
        self._send_frame(frame, ETH_P_IP, BROADCAST_MAC, self._s.ip)

    async def send_unicast(
        self, payload: bytes, *, src: IPv4Address, dst: IPv4Address, dst_mac: str | None
    ) -> None:
        if dst_mac is not None:
            frame = codec.build_ip_udp(payload, src=src, dst=dst, ident=_ident())
            self._send_frame(frame, ETH_P_IP, codec.mac_bytes(dst_mac), self._s.ip)
            return
        if self._s.udp is None:
            log.debug("%s: no route to send unicast to %s", self.target.ifname, dst)
            return
        try:
            self._s.udp.sendto(payload, (str(dst), SERVER_PORT))
        except OSError as exc:
            log.debug("%s: unicast to %s failed: %s", self.target.ifname, dst, exc)

    # -- ARP probe -----------------------------------------------------------------------

    async def arp_probe(self, address: IPv4Address, wait: float, probes: int) -> bool:
        if wait <= 0 or probes <= 0:
            return False
        sock = self._s.arp
        if sock is None:
            raise RuntimeError(f"{self.target.ifname}: a transport for unicast cannot probe")
        probe = build_arp(ARP_REQUEST, self._mac, ZERO, bytes(6), address)
        _attach_filter(sock, _bpf_arp_sender(address))
        try:
            return await self._probe(sock, probe, address, wait, probes)
        finally:
            with contextlib.suppress(OSError):
                _attach_filter(sock, _BPF_DROP)

    async def _probe(
        self, sock: socket.socket, probe: bytes, address: IPv4Address, wait: float, probes: int
    ) -> bool:
        deadline = self._loop.time() + wait
        interval = wait / probes
        next_probe = self._loop.time()
        sent = 0
        while True:
            now = self._loop.time()
            if sent < probes and now >= next_probe:
                self._send_frame(probe, ETH_P_ARP, BROADCAST_MAC, sock)
                sent += 1
                next_probe += interval
            while not self._arp_rx.empty():
                if codec.arp_conflict(self._arp_rx.get_nowait(), address, self._mac):
                    return True
            if now >= deadline:
                return False
            until = min(deadline, next_probe) if sent < probes else deadline
            try:
                arp = await asyncio.wait_for(self._arp_rx.get(), max(0.0, until - now))
            except TimeoutError:
                continue
            if codec.arp_conflict(arp, address, self._mac):
                return True

    # -- lifecycle -----------------------------------------------------------------------

    def is_running(self) -> bool:
        try:
            return bool(_get_flags(self._s.ctl, self.target.ifname) & IFF_RUNNING)
        except OSError:
            return False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sock in (self._s.ip, self._s.arp):
            if sock is not None:
                self._loop.remove_reader(sock.fileno())
        socks = [x for x in (self._s.ip, self._s.arp, self._s.udp, self._s.ctl) if x is not None]
        # Closing a packet socket waits for an RCU grace period (synchronize_net, ~10 ms):
        # never on the event loop.
        self._loop.run_in_executor(None, _close_all, socks)


def _interface_present(target: Target) -> bool:
    """Raises (OSError, or CNIError caused by one) when it cannot tell: out of descriptors
    is not "the pod is gone"."""
    try:
        fd = open_netns(target.netns_path)
    except FileNotFoundError:
        return False
    except CNIError as exc:
        if is_fd_exhaustion(exc):
            raise
        return False
    try:
        if target.netns_inode is not None and netns_inode(fd) != target.netns_inode:
            return False
        return run_in_netns(fd, lambda: interface_exists(target.ifname))
    finally:
        os.close(fd)


async def pod_still_there(probe: Awaitable[bool], key: str) -> bool:
    """Whether a journaled lease's pod is still there, at start-up. When the probe cannot
    tell (out of descriptors), yes: keeping a gone pod's lease costs one failed renewal,
    dropping a live pod's lease takes its address away."""
    try:
        return await probe
    except (OSError, CNIError) as exc:
        log.warning(
            "%s: cannot tell whether the pod is still there (%s); keeping its lease", key, exc
        )
        return True


def _close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


_ident_counter = [int.from_bytes(os.urandom(2), "big")]


def _ident() -> int:
    _ident_counter[0] = (_ident_counter[0] + 1) & 0xFFFF
    return _ident_counter[0]


class PodTransportFactory:
    """Opens transports in pod namespaces.

    ``link_wait``: after bringing the interface up, wait up to this long for it to become
    operationally up (carrier on both veth ends, qdisc attached); frames sent before that
    are silently dropped and would cost a retransmission.
    """

    def __init__(self, *, link_wait: float = 2.0) -> None:
        self.link_wait = link_wait

    async def open(
        self, target: Target, *, bring_up: bool = False, unicast_from: IPv4Address | None = None
    ) -> PodTransport:
        socks = await asyncio.to_thread(self._open_sync, target, bring_up, unicast_from)
        tr = PodTransport(target, socks)
        if socks.hwaddr != target.mac.lower():
            log.warning(
                "%s in %s has MAC %s, expected %s",
                target.ifname,
                target.netns_path,
                socks.hwaddr,
                target.mac,
            )
        if bring_up:
            await self._wait_running(tr)
        return tr

    def _open_sync(
        self, target: Target, bring_up: bool, unicast_from: IPv4Address | None
    ) -> _Sockets:
        return in_pod_netns(
            target.netns_fd,
            target.netns_path,
            target.netns_inode,
            lambda: _make_sockets(target.ifname, bring_up, unicast_from),
        )

    async def exists(self, target: Target) -> bool:
        return await asyncio.to_thread(_interface_present, target)

    async def _wait_running(self, tr: PodTransport) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.link_wait
        delay = 0.002
        while not tr.is_running():
            if loop.time() >= deadline:
                log.debug(
                    "%s: not running after %.1fs; sending anyway", tr.target.ifname, self.link_wait
                )
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
