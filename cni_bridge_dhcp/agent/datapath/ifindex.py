"""Interface name to index, in the calling thread's namespace, without losing errno.

``socket.if_nametoindex`` opens a socket inside glibc and reports every failure as
"no interface with this name", errno unset: an agent out of descriptors (EMFILE) then
took a live pod interface for a vanished one and failed the ADD with 5 instead of 11.
Here only ENODEV/ENXIO (or an impossible name) mean "not there"; anything else raises.
"""

from __future__ import annotations

import errno
import fcntl
import socket
import struct

from ...cni.names import IFNAMSIZ

SIOCGIFINDEX = 0x8933
_IFREQ_SIZE = 40  # struct ifreq: 16-byte name + 24-byte union
_ABSENT = frozenset({errno.ENODEV, errno.ENXIO})


def ifreq(ifname: str, tail: bytes = b"") -> bytes:
    """A struct ifreq naming ``ifname`` (at most IFNAMSIZ - 1 bytes), union set to ``tail``."""
    return struct.pack(f"{IFNAMSIZ}s", ifname.encode()) + tail.ljust(_IFREQ_SIZE - IFNAMSIZ, b"\0")


def interface_index(ifname: str, ctl: socket.socket | None = None) -> int | None:
    """The index of ``ifname``, or None if no interface has that name.

    ``ctl`` is any AF_INET datagram socket of the namespace, to spare opening one.
    Raises OSError for any other failure, EMFILE included.
    """
    raw = ifname.encode()
    if not raw or len(raw) >= IFNAMSIZ or b"\0" in raw or b"/" in raw:
        return None
    if ctl is not None:
        return _index(ctl, ifname)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        return _index(sock, ifname)


def _index(ctl: socket.socket, ifname: str) -> int | None:
    try:
        res = fcntl.ioctl(ctl.fileno(), SIOCGIFINDEX, ifreq(ifname))
    except OSError as exc:
        if exc.errno in _ABSENT:
            return None
        raise
    return int(struct.unpack_from("i", res, IFNAMSIZ)[0])


def interface_exists(ifname: str) -> bool:
    """Whether ``ifname`` exists; out of descriptors raises rather than answering False."""
    return interface_index(ifname) is not None
