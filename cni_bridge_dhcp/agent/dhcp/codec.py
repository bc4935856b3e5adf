"""DHCPv4 messages on the wire (RFC 2131/2132; RFC 3396 long and overloaded options), plus
the IPv4/UDP and ARP framing the client needs on packet sockets. Option values (routes,
names, addresses) are decoded in ``options``.

Our own small struct-based codec rather than pyroute2's: every decoder here is total
(malformed input raises ``DecodeError``, nothing else) and typed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv4Address

from ..datapath.arp import Arp

BOOTREQUEST = 1
BOOTREPLY = 2
HTYPE_ETHER = 1
CLIENT_PORT = 68
SERVER_PORT = 67
MAGIC = b"\x63\x82\x53\x63"
BOOTP_MIN_LEN = 300  # some relays and old servers drop shorter BOOTP packets
FLAG_BROADCAST = 0x8000

ZERO = IPv4Address(0)
BROADCAST = IPv4Address("255.255.255.255")
BROADCAST_MAC = b"\xff" * 6

# op htype hlen hops xid secs flags ciaddr yiaddr siaddr giaddr chaddr sname file
_FIXED = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
_HEADER_LEN = _FIXED.size + len(MAGIC)  # 240


class DecodeError(ValueError):
    """Input that is not a well-formed packet or option value."""


class MessageType(IntEnum):
    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class Opt(IntEnum):
    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS = 6
    HOSTNAME = 12
    DOMAIN = 15
    INTERFACE_MTU = 26
    BROADCAST_ADDR = 28
    STATIC_ROUTES = 33
    REQUESTED_IP = 50
    LEASE_TIME = 51
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAM_REQUEST = 55
    MESSAGE = 56
    MAX_MESSAGE_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    VENDOR_CLASS = 60
    CLIENT_ID = 61
    DOMAIN_SEARCH = 119
    CLASSLESS_ROUTES = 121
    END = 255


@dataclass(frozen=True)
class Message:
    """One BOOTP/DHCP message. ``options`` holds each option once, RFC 3396 concatenated."""

    op: int
    xid: int
    chaddr: bytes
    options: Mapping[int, bytes] = field(default_factory=dict)
    htype: int = HTYPE_ETHER
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = ZERO
    yiaddr: IPv4Address = ZERO
    siaddr: IPv4Address = ZERO
    giaddr: IPv4Address = ZERO
    sname: bytes = b""
    file: bytes = b""

    @property
    def message_type(self) -> MessageType | None:
        raw = self.options.get(Opt.MESSAGE_TYPE)
        if raw is None or len(raw) != 1:
            return None
        try:
            return MessageType(raw[0])
        except ValueError:
            return None

    def option(self, code: int) -> bytes | None:
        return self.options.get(code)


def encode(msg: Message) -> bytes:
    if len(msg.chaddr) > 16:
        raise ValueError(f"chaddr is {len(msg.chaddr)} bytes, at most 16")
    out = bytearray(
        _FIXED.pack(
            msg.op,
            msg.htype,
            len(msg.chaddr),
            msg.hops,
            msg.xid & 0xFFFFFFFF,
            msg.secs & 0xFFFF,
            msg.flags & 0xFFFF,
            msg.ciaddr.packed,
            msg.yiaddr.packed,
            msg.siaddr.packed,
            msg.giaddr.packed,
            msg.chaddr,
            msg.sname[:64],
            msg.file[:128],
        )
    )
    out += MAGIC
    for code, value in msg.options.items():
        if code in (Opt.PAD, Opt.END) or not 0 < code < 255:
            continue
        if not value:
            out += bytes((code, 0))
            continue
        # RFC 3396: a value longer than 255 bytes is split into consecutive instances.
        for start in range(0, len(value), 255):
            chunk = value[start : start + 255]
            out += bytes((code, len(chunk)))
            out += chunk
    out.append(Opt.END)
    if len(out) < BOOTP_MIN_LEN:
        out += bytes(BOOTP_MIN_LEN - len(out))
    return bytes(out)


def _parse_options(buf: bytes, acc: dict[int, bytearray]) -> None:
    i = 0
    n = len(buf)
    while i < n:
        code = buf[i]
        if code == Opt.PAD:
            i += 1
            continue
        if code == Opt.END:
            return
        if i + 1 >= n:
            raise DecodeError(f"option {code} truncated before its length")
        length = buf[i + 1]
        end = i + 2 + length
        if end > n:
            raise DecodeError(f"option {code} runs past the end of its field")
        acc.setdefault(code, bytearray()).extend(buf[i + 2 : end])
        i = end
    # A missing END is tolerated: several embedded servers omit it.


def decode(data: bytes) -> Message:
    """Decode a BOOTP/DHCP message; raise DecodeError (only) if it is malformed."""
    if len(data) < _HEADER_LEN:
        raise DecodeError(f"{len(data)} bytes is shorter than a DHCP header")
    if data[_FIXED.size : _HEADER_LEN] != MAGIC:
        raise DecodeError("no DHCP magic cookie")
    (
        op,
        htype,
        hlen,
        hops,
        xid,
        secs,
        flags,
        ciaddr,
        yiaddr,
        siaddr,
        giaddr,
        chaddr,
        sname,
        file_,
    ) = _FIXED.unpack_from(data)
    if hlen > 16:
        raise DecodeError(f"hlen {hlen} exceeds the 16-byte chaddr field")
    acc: dict[int, bytearray] = {}
    _parse_options(data[_HEADER_LEN:], acc)
    overload = acc.pop(Opt.OVERLOAD, None)
    if overload is not None:
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise DecodeError("malformed option overload (52)")
        # RFC 3396 order: options field, then file, then sname.
        if overload[0] & 1:
            _parse_options(file_, acc)
        if overload[0] & 2:
            _parse_options(sname, acc)
        acc.pop(Opt.OVERLOAD, None)
        if overload[0] & 1:
            file_ = b""
        if overload[0] & 2:
            sname = b""
    return Message(
        op=op,
        htype=htype,
        hops=hops,
        xid=xid,
        secs=secs,
        flags=flags,
        ciaddr=IPv4Address(ciaddr),
        yiaddr=IPv4Address(yiaddr),
        siaddr=IPv4Address(siaddr),
        giaddr=IPv4Address(giaddr),
        chaddr=bytes(chaddr[:hlen]),
        sname=bytes(sname).rstrip(b"\0"),
        file=bytes(file_).rstrip(b"\0"),
        options={code: bytes(value) for code, value in acc.items()},
    )


def accept_reply(
    data: bytes, *, xid: int, chaddr: bytes, types: Iterable[MessageType]
) -> Message | None:
    """The reply in ``data`` if it is a server reply to our transaction; None otherwise.

    The xid, chaddr, op, hardware type and message type checks live here and only here,
    so that nothing the state machine sees can be a foreign or stale packet.
    """
    try:
        msg = decode(data)
    except DecodeError:
        return None
    if msg.op != BOOTREPLY or msg.htype != HTYPE_ETHER or msg.xid != xid:
        return None
    if msg.chaddr != chaddr:
        return None
    mtype = msg.message_type
    if mtype is None or mtype not in set(types):
        return None
    # A garbled server id or lease time is a garbled reply, not a missing option: taking
    # it would mean guessing who answered or how long the address is ours.
    for code in (Opt.SERVER_ID, Opt.LEASE_TIME):
        raw = msg.options.get(code)
        if raw is not None and len(raw) != 4:
            return None
    return msg


# -- IPv4/UDP framing for packet sockets -----------------------------------------------------


@dataclass(frozen=True)
class Datagram:
    src: IPv4Address
    dst: IPv4Address
    sport: int
    dport: int
    payload: bytes


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_ip_udp(
    payload: bytes,
    *,
    src: IPv4Address,
    dst: IPv4Address,
    sport: int = CLIENT_PORT,
    dport: int = SERVER_PORT,
    ttl: int = 64,
    ident: int = 0,
) -> bytes:
    udp_len = 8 + len(payload)
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    csum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0x10, 20 + udp_len, ident, 0, ttl, 17, 0, src.packed, dst.packed
    )
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


def parse_ip_udp(packet: bytes) -> Datagram | None:
    """The UDP datagram in an IPv4 packet (no link header), or None if it is not one.

    UDP checksums are not verified: on veth the sender's checksum is often left to an
    offload that never runs, so packet sockets see it unfinished.
    """
    if len(packet) < 28 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20 or len(packet) < ihl + 8:
        return None
    total = int.from_bytes(packet[2:4], "big")
    if total < ihl + 8 or total > len(packet):
        return None
    if int.from_bytes(packet[6:8], "big") & 0x3FFF:  # MF set or a non-zero offset
        return None
    if packet[9] != 17 or _checksum(packet[:ihl]) != 0:
        return None
    sport, dport, udp_len = struct.unpack_from("!HHH", packet, ihl)
    if udp_len < 8 or ihl + udp_len > total:
        return None
    return Datagram(
        src=IPv4Address(packet[12:16]),
        dst=IPv4Address(packet[16:20]),
        sport=sport,
        dport=dport,
        payload=packet[ihl + 8 : ihl + udp_len],
    )


# -- ARP conflicts (RFC 5227); the packets are datapath/arp.py's --------------------------


def arp_conflict(arp: Arp, address: IPv4Address, own_mac: bytes) -> bool:
    """Someone else already uses ``address`` (it sends ARP with it as sender address).

    Deliberately narrower than RFC 5227 2.1.1, which also counts another host *probing*
    for the same address: a DHCP server without offer reservation (dnsmasq --no-ping)
    offers the same free address to every client of a concurrent burst, each client saw
    the others' probes, all declined, and the burst livelocked (measured: 3 of 50
    concurrent ADDs failed after 10 DECLINEs each). Two clients that are both still
    probing are arbitrated by the server instead: it ACKs one REQUEST and NAKs the other.
    """
    return arp.sha != own_mac and arp.spa == address


def mac_bytes(mac: str) -> bytes:
    parts = mac.replace("-", ":").split(":")
    if len(parts) != 6:
        raise ValueError(f"invalid MAC address {mac!r}")
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError as exc:
        raise ValueError(f"invalid MAC address {mac!r}") from exc
    return raw


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)
