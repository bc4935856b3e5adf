"""A UDP socket on the pod's interface, opened inside the pod's namespace: DHCPv6 goes from
[the pod's link-local]:546 to All_DHCP_Relay_Agents_and_Servers (ff02::1:2) port 547.

The socket is bound to [::]:546 and to the device (SO_BINDTODEVICE), not to the link-local
address: binding that address fails while it is tentative (DAD), and the kernel picks it
as source for the link-scoped destination anyway. A socket keeps the namespace it was
made in, so only its creation runs in a namespace thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Protocol

from ...datapath.ifindex import interface_index
from ...runtime.fdlimits import is_fd_exhaustion

# Gone: the DHCPv4 transport's, re-exported (the pod's namespace or interface is gone)
from ..transport import Gone as Gone
from ..transport import in_pod_netns

CLIENT_PORT = 546
SERVER_PORT = 547
ALL_SERVERS = "ff02::1:2"


@dataclass(frozen=True)
class Target6:
    netns_path: str
    ifname: str
    netns_inode: int | None = None
    netns_fd: int | None = None  # ADD's pinned fd (the path may not be usable yet)


class Transport6(Protocol):
    async def send(self, payload: bytes) -> None: ...

    async def recv(self, timeout: float) -> tuple[bytes, IPv6Address] | None: ...

    def close(self) -> None: ...


class Transport6Factory(Protocol):
    async def open(self, target: Target6) -> Transport6: ...

    async def exists(self, target: Target6) -> bool: ...


def _make_socket(ifname: str) -> tuple[socket.socket, int]:
    """Runs inside the pod namespace."""
    index = interface_index(ifname)
    if index is None:
        raise Gone(f"interface {ifname} is gone")
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.bind(("::", CLIENT_PORT))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock, index


class PodTransport6:
    def __init__(self, sock: socket.socket, index: int) -> None:
        self.sock = sock
        self.index = index
        self._loop = asyncio.get_running_loop()

    async def send(self, payload: bytes) -> None:
        # No usable source address yet (link-local still in DAD) or the link is down:
        # the exchange retransmits; a lost send is a lost packet.
        with contextlib.suppress(OSError):
            await self._loop.sock_sendto(
                self.sock, payload, (ALL_SERVERS, SERVER_PORT, 0, self.index)
            )

    async def recv(self, timeout: float) -> tuple[bytes, IPv6Address] | None:
        if timeout <= 0:
            return None
        try:
            data, addr = await asyncio.wait_for(self._loop.sock_recvfrom(self.sock, 65535), timeout)
        except TimeoutError:
            return None
        host = str(addr[0]).split("%", 1)[0]
        return data, IPv6Address(host)

    def close(self) -> None:
        self.sock.close()


def _open_sync(target: Target6) -> tuple[socket.socket, int]:
    return in_pod_netns(
        target.netns_fd, target.netns_path, target.netns_inode, lambda: _make_socket(target.ifname)
    )


class PodTransport6Factory:
    async def open(self, target: Target6) -> Transport6:
        sock, index = await asyncio.to_thread(_open_sync, target)
        return PodTransport6(sock, index)

    async def exists(self, target: Target6) -> bool:
        try:
            sock, _ = await asyncio.to_thread(_open_sync, target)
        except Gone:
            return False
        except OSError as exc:
            if is_fd_exhaustion(exc):
                raise  # cannot tell; out of descriptors is not "the pod is gone"
            return False
        sock.close()  # a socket, not just the name: the namespace must also be usable
        return True
