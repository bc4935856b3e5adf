"""DHCPv6 messages (RFC 8415) as the pod client needs them: encode what it sends, decode what
servers answer.

The client/server message format only (no relay messages: the client never sees one). The
decoder takes bytes from the LAN, so it trusts nothing: every length is checked against what
is left, every loop advances by at least the 4-byte option header, and whatever is wrong
raises ``Malformed`` (a ValueError); it never reads past the buffer nor loops forever.
Options it does not know are kept raw in ``Message6.other``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from ipaddress import IPv6Address

# Message types (RFC 8415 7.3)
SOLICIT = 1
ADVERTISE = 2
REQUEST = 3
RENEW = 5
REBIND = 6
REPLY = 7
RELEASE = 8
DECLINE = 9

MESSAGE_NAMES = {
    SOLICIT: "SOLICIT",
    ADVERTISE: "ADVERTISE",
    REQUEST: "REQUEST",
    4: "CONFIRM",
    RENEW: "RENEW",
    REBIND: "REBIND",
    REPLY: "REPLY",
    RELEASE: "RELEASE",
    DECLINE: "DECLINE",
    10: "RECONFIGURE",
    11: "INFORMATION-REQUEST",
}

# Options (RFC 8415 21, RFC 3646)
OPT_CLIENTID = 1
OPT_SERVERID = 2
OPT_IA_NA = 3
OPT_IAADDR = 5
OPT_ORO = 6
OPT_PREFERENCE = 7
OPT_ELAPSED_TIME = 8
OPT_STATUS_CODE = 13
OPT_RAPID_COMMIT = 14
OPT_DNS_SERVERS = 23
OPT_DOMAIN_LIST = 24

# Status codes (RFC 8415 21.13)
SUCCESS = 0
UNSPEC_FAIL = 1
NO_ADDRS_AVAIL = 2
NO_BINDING = 3
NOT_ON_LINK = 4
USE_MULTICAST = 5

INFINITY = 0xFFFFFFFF
MAX_DUID = 130  # RFC 8415 11.1: 2-byte type + up to 128 bytes


class Malformed(ValueError):
    """A DHCPv6 message that cannot be decoded."""


@dataclass(frozen=True)
class Status:
    code: int
    message: str = ""


@dataclass(frozen=True)
class IaAddress:
    address: IPv6Address
    preferred: int
    valid: int
    status: Status | None = None


@dataclass(frozen=True)
class IaNa:
    iaid: int
    t1: int = 0
    t2: int = 0
    addresses: tuple[IaAddress, ...] = ()
    status: Status | None = None


@dataclass(frozen=True)
class Message6:
    msg_type: int
    xid: int
    client_id: bytes | None = None
    server_id: bytes | None = None
    ia_na: tuple[IaNa, ...] = ()
    oro: tuple[int, ...] = ()
    elapsed: int | None = None  # hundredths of a second
    status: Status | None = None
    preference: int | None = None
    rapid_commit: bool = False
    dns_servers: tuple[IPv6Address, ...] = ()
    domains: tuple[str, ...] = ()
    other: tuple[tuple[int, bytes], ...] = field(default=())

    @property
    def name(self) -> str:
        return MESSAGE_NAMES.get(self.msg_type, f"type {self.msg_type}")


# -- encoding ------------------------------------------------------------------------------


def _opt(code: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"DHCPv6 option {code} is longer than 65535 bytes")
    return struct.pack("!HH", code, len(value)) + value


def _status(status: Status) -> bytes:
    return _opt(OPT_STATUS_CODE, struct.pack("!H", status.code) + status.message.encode())


def _ia_na(ia: IaNa) -> bytes:
    inner = b""
    for a in ia.addresses:
        sub = _status(a.status) if a.status else b""
        inner += _opt(OPT_IAADDR, a.address.packed + struct.pack("!II", a.preferred, a.valid) + sub)
    if ia.status is not None:
        inner += _status(ia.status)
    return _opt(OPT_IA_NA, struct.pack("!III", ia.iaid, ia.t1, ia.t2) + inner)


def encode_domains(domains: tuple[str, ...]) -> bytes:
    """RFC 1035 3.1 names, uncompressed (RFC 8415 10)."""
    out = b""
    for domain in domains:
        for label in domain.strip(".").split("."):
            raw = label.encode("idna") if label else b""
            if not raw or len(raw) > 63:
                raise ValueError(f"bad domain name {domain!r}")
            out += bytes([len(raw)]) + raw
        out += b"\x00"
    return out


def encode(msg: Message6) -> bytes:
    if not 0 <= msg.xid <= 0xFFFFFF:
        raise ValueError("transaction id is 24 bits")
    out = bytes([msg.msg_type]) + msg.xid.to_bytes(3, "big")
    if msg.client_id is not None:
        out += _opt(OPT_CLIENTID, msg.client_id)
    if msg.server_id is not None:
        out += _opt(OPT_SERVERID, msg.server_id)
    for ia in msg.ia_na:
        out += _ia_na(ia)
    if msg.oro:
        out += _opt(OPT_ORO, b"".join(struct.pack("!H", c) for c in msg.oro))
    if msg.elapsed is not None:
        out += _opt(OPT_ELAPSED_TIME, struct.pack("!H", min(msg.elapsed, 0xFFFF)))
    if msg.preference is not None:
        out += _opt(OPT_PREFERENCE, bytes([msg.preference]))
    if msg.status is not None:
        out += _status(msg.status)
    if msg.rapid_commit:
        out += _opt(OPT_RAPID_COMMIT, b"")
    if msg.dns_servers:
        out += _opt(OPT_DNS_SERVERS, b"".join(a.packed for a in msg.dns_servers))
    if msg.domains:
        out += _opt(OPT_DOMAIN_LIST, encode_domains(msg.domains))
    for code, value in msg.other:
        out += _opt(code, value)
    return out


# -- decoding ------------------------------------------------------------------------------


def _options(data: bytes, where: str) -> list[tuple[int, bytes]]:
    """Split ``data`` into (code, value) options; each step consumes >= 4 bytes."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise Malformed(f"{where}: truncated option header at byte {pos}")
        code, length = struct.unpack_from("!HH", data, pos)
        pos += 4
        if length > len(data) - pos:
            raise Malformed(f"{where}: option {code} claims {length} bytes, {len(data) - pos} left")
        out.append((code, data[pos : pos + length]))
        pos += length
    return out


def _decode_status(value: bytes) -> Status:
    if len(value) < 2:
        raise Malformed("STATUS_CODE shorter than 2 bytes")
    (code,) = struct.unpack_from("!H", value)
    return Status(code, value[2:].decode("utf-8", errors="replace"))


def _decode_iaaddr(value: bytes) -> IaAddress:
    if len(value) < 24:
        raise Malformed("IAADDR shorter than 24 bytes")
    preferred, valid = struct.unpack_from("!II", value, 16)
    status = None
    for code, sub in _options(value[24:], "IAADDR"):
        if code == OPT_STATUS_CODE:
            status = _decode_status(sub)
    return IaAddress(IPv6Address(value[:16]), preferred, valid, status)


def _decode_ia_na(value: bytes) -> IaNa:
    if len(value) < 12:
        raise Malformed("IA_NA shorter than 12 bytes")
    iaid, t1, t2 = struct.unpack_from("!III", value)
    addresses: list[IaAddress] = []
    status = None
    for code, sub in _options(value[12:], "IA_NA"):
        if code == OPT_IAADDR:
            addresses.append(_decode_iaaddr(sub))
        elif code == OPT_STATUS_CODE:
            status = _decode_status(sub)
    return IaNa(iaid, t1, t2, tuple(addresses), status)


def decode_domains(value: bytes) -> tuple[str, ...]:
    """RFC 1035 names without compression; each label advances at least one byte."""
    names: list[str] = []
    labels: list[str] = []
    pos = 0
    while pos < len(value):
        length = value[pos]
        pos += 1
        if length == 0:
            if labels:
                names.append(".".join(labels))
            labels = []
            continue
        if length > 63 or length > len(value) - pos:
            raise Malformed("DOMAIN_LIST: bad label length (compression is not allowed)")
        labels.append(value[pos : pos + length].decode("ascii", errors="replace"))
        pos += length
    if labels:
        raise Malformed("DOMAIN_LIST: name not terminated")
    return tuple(names)


def decode(data: bytes) -> Message6:
    if len(data) < 4:
        raise Malformed(f"message of {len(data)} bytes is shorter than its 4-byte header")
    msg_type = data[0]
    xid = int.from_bytes(data[1:4], "big")
    ids: dict[int, bytes] = {}
    ia_na: list[IaNa] = []
    other: list[tuple[int, bytes]] = []
    oro: tuple[int, ...] = ()
    elapsed: int | None = None
    status: Status | None = None
    preference: int | None = None
    rapid = False
    dns: tuple[IPv6Address, ...] = ()
    domains: tuple[str, ...] = ()
    for code, value in _options(data[4:], "message"):
        if code in (OPT_CLIENTID, OPT_SERVERID):
            if not 2 < len(value) <= MAX_DUID:
                raise Malformed(f"option {code}: a DUID of {len(value)} bytes")
            ids[code] = value
        elif code == OPT_IA_NA:
            ia_na.append(_decode_ia_na(value))
        elif code == OPT_ORO:
            if len(value) % 2:
                raise Malformed("ORO of odd length")
            oro = struct.unpack(f"!{len(value) // 2}H", value)
        elif code == OPT_ELAPSED_TIME:
            if len(value) != 2:
                raise Malformed("ELAPSED_TIME is not 2 bytes")
            (elapsed,) = struct.unpack("!H", value)
        elif code == OPT_STATUS_CODE:
            status = _decode_status(value)
        elif code == OPT_PREFERENCE:
            if len(value) != 1:
                raise Malformed("PREFERENCE is not 1 byte")
            preference = value[0]
        elif code == OPT_RAPID_COMMIT:
            rapid = True
        elif code == OPT_DNS_SERVERS:
            if len(value) % 16:
                raise Malformed("DNS_SERVERS is not a multiple of 16 bytes")
            dns = tuple(IPv6Address(value[i : i + 16]) for i in range(0, len(value), 16))
        elif code == OPT_DOMAIN_LIST:
            domains = decode_domains(value)
        else:
            other.append((code, value))
    return Message6(
        msg_type,
        xid,
        client_id=ids.get(OPT_CLIENTID),
        server_id=ids.get(OPT_SERVERID),
        ia_na=tuple(ia_na),
        oro=oro,
        elapsed=elapsed,
        status=status,
        preference=preference,
        rapid_commit=rapid,
        dns_servers=dns,
        domains=domains,
        other=tuple(other),
    )
