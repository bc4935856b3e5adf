"""DHCP option values (RFC 2132): integers, addresses and text, the subnet mask as a
prefix, static routes (option 33), classless routes (RFC 3442, option 121) and the domain
search list (RFC 1035 names with compression, RFC 3397, option 119).

Every decoder is total: malformed input raises ``codec.DecodeError``, nothing else. How
option instances are split and joined on the wire (RFC 3396) is the message codec's part.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from .codec import ZERO, DecodeError


def u16(value: bytes) -> int:
    if len(value) != 2:
        raise DecodeError(f"expected 2 bytes, got {len(value)}")
    return int.from_bytes(value, "big")


def u32(value: bytes) -> int:
    if len(value) != 4:
        raise DecodeError(f"expected 4 bytes, got {len(value)}")
    return int.from_bytes(value, "big")


def ipv4(value: bytes) -> IPv4Address:
    if len(value) != 4:
        raise DecodeError(f"expected an IPv4 address (4 bytes), got {len(value)}")
    return IPv4Address(value)


def ipv4_list(value: bytes) -> tuple[IPv4Address, ...]:
    if not value or len(value) % 4:
        raise DecodeError(f"expected a list of IPv4 addresses, got {len(value)} bytes")
    return tuple(IPv4Address(value[i : i + 4]) for i in range(0, len(value), 4))


def text(value: bytes) -> str:
    """An NVT-ASCII string option; trailing NULs (sent by some servers) are dropped."""
    raw = value.rstrip(b"\0")
    if not raw:
        raise DecodeError("empty string option")
    return raw.decode("utf-8", errors="replace")


def netmask_prefix(value: bytes) -> int:
    mask = u32(value)
    prefix = 32 - ((~mask & 0xFFFFFFFF).bit_length())
    if mask != (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF:
        raise DecodeError(f"subnet mask {IPv4Address(mask)} is not contiguous")
    return prefix


Route = tuple[IPv4Network, IPv4Address]


def classless_routes(value: bytes) -> tuple[Route, ...]:
    """Option 121 (RFC 3442): width, significant destination octets, router."""
    routes: list[Route] = []
    i = 0
    n = len(value)
    if n == 0:
        raise DecodeError("empty classless static route option")
    while i < n:
        width = value[i]
        if width > 32:
            raise DecodeError(f"classless route prefix length {width} > 32")
        octets = (width + 7) // 8
        end = i + 1 + octets + 4
        if end > n:
            raise DecodeError("classless route option truncated")
        dest = value[i + 1 : i + 1 + octets] + bytes(4 - octets)
        router = IPv4Address(value[i + 1 + octets : end])
        # Bits past the prefix length are not part of the destination (RFC 3442 section 1).
        routes.append((IPv4Network((dest, width), strict=False), router))
        i = end
    return tuple(routes)


def _classful_prefix(addr: IPv4Address) -> int:
    first = addr.packed[0]
    prefix = 8 if first < 128 else 16 if first < 192 else 24
    host_bits = int(addr) & ((1 << (32 - prefix)) - 1)
    # A destination with bits beyond its classful mask can only mean that host.
    return prefix if host_bits == 0 else 32


def static_routes(value: bytes) -> tuple[Route, ...]:
    """Option 33 (RFC 2132 5.8): classful (destination, router) pairs; no default route."""
    if not value or len(value) % 8:
        raise DecodeError(f"static route option of {len(value)} bytes is not pairs of addresses")
    routes: list[Route] = []
    for i in range(0, len(value), 8):
        dest = IPv4Address(value[i : i + 4])
        router = IPv4Address(value[i + 4 : i + 8])
        if dest == ZERO:
            continue  # illegal in option 33
        routes.append((IPv4Network((dest, _classful_prefix(dest))), router))
    return tuple(routes)


_MAX_NAME = 255


def read_name(data: bytes, pos: int) -> tuple[str, int]:
    """One RFC 1035 name at ``pos``; returns it and the position after it."""
    labels: list[str] = []
    cur = pos
    resume: int | None = None
    limit = pos  # each pointer must go strictly below the last one: no loops
    length = 0
    while True:
        if cur >= len(data):
            raise DecodeError("domain name runs past the end of the option")
        size = data[cur]
        if size == 0:
            cur += 1
            break
        kind = size & 0xC0
        if kind == 0xC0:
            if cur + 1 >= len(data):
                raise DecodeError("truncated compression pointer")
            ptr = ((size & 0x3F) << 8) | data[cur + 1]
            if ptr >= limit:
                raise DecodeError("compression pointer does not point backwards")
            if resume is None:
                resume = cur + 2
            limit = ptr
            cur = ptr
            continue
        if kind:
            raise DecodeError(f"reserved label type {kind:#x}")
        raw = data[cur + 1 : cur + 1 + size]
        if len(raw) != size:
            raise DecodeError("domain label runs past the end of the option")
        try:
            label = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise DecodeError("non-ASCII domain label") from exc
        if "." in label or not label.isprintable() or " " in label:
            raise DecodeError(f"invalid domain label {label!r}")
        length += size + 1
        if length > _MAX_NAME:
            raise DecodeError("domain name longer than 255 bytes")
        labels.append(label)
        cur += 1 + size
    return ".".join(labels), (resume if resume is not None else cur)


def domain_search(value: bytes) -> tuple[str, ...]:
    """Option 119 (RFC 3397): a list of RFC 1035 names, compression pointers relative to
    the start of the (concatenated) option data."""
    if not value:
        raise DecodeError("empty domain search option")
    names: list[str] = []
    pos = 0
    while pos < len(value):
        name, pos = read_name(value, pos)
        if name and name not in names:
            names.append(name)
    return tuple(names)


def encode_domain_search(names: Iterable[str]) -> bytes:
    """RFC 1035 names without compression (for tests and ``provide``)."""
    out = bytearray()
    for name in names:
        for label in name.strip(".").split("."):
            if label:
                raw = label.encode("ascii")
                if len(raw) > 63:
                    raise ValueError(f"label {label!r} longer than 63 bytes")
                out.append(len(raw))
                out += raw
        out.append(0)
    return bytes(out)


def encode_classless_routes(routes: Iterable[Route]) -> bytes:
    out = bytearray()
    for net, router in routes:
        width = net.prefixlen
        out.append(width)
        out += net.network_address.packed[: (width + 7) // 8]
        out += router.packed
    return bytes(out)
