"""DHCP packet codec: round trips, option decode tables, and property tests that the
decoder never raises anything but DecodeError and never accepts a foreign reply."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni_bridge_dhcp.agent.datapath import arp
from cni_bridge_dhcp.agent.dhcp import codec, options
from cni_bridge_dhcp.agent.dhcp.codec import (
    BOOTREPLY,
    BOOTREQUEST,
    DecodeError,
    Message,
    MessageType,
    Opt,
)

MAC = bytes.fromhex("0a580a000001")
XID = 0x1234ABCD


def reply(mtype: MessageType = MessageType.OFFER, **kw: object) -> Message:
    fields: dict[str, object] = {
        "op": BOOTREPLY,
        "xid": XID,
        "chaddr": MAC,
        "yiaddr": IPv4Address("192.168.77.120"),
        "options": {
            Opt.MESSAGE_TYPE: bytes((mtype,)),
            Opt.SERVER_ID: IPv4Address("192.168.77.1").packed,
            Opt.LEASE_TIME: (120).to_bytes(4, "big"),
            Opt.SUBNET_MASK: bytes((255, 255, 255, 0)),
        },
    }
    fields.update(kw)
    return Message(**fields)  # type: ignore[arg-type]


def test_round_trip_preserves_every_field() -> None:
    msg = Message(
        op=BOOTREQUEST,
        xid=0xDEADBEEF,
        chaddr=MAC,
        secs=7,
        flags=codec.FLAG_BROADCAST,
        ciaddr=IPv4Address("10.0.0.5"),
        yiaddr=IPv4Address("10.0.0.6"),
        siaddr=IPv4Address("10.0.0.7"),
        giaddr=IPv4Address("10.0.0.8"),
        hops=2,
        options={Opt.MESSAGE_TYPE: b"\x03", Opt.CLIENT_ID: b"\x00pod", Opt.HOSTNAME: b"web-0"},
    )
    wire = codec.encode(msg)
    assert len(wire) >= codec.BOOTP_MIN_LEN
    assert codec.decode(wire) == msg


def test_long_option_is_split_and_concatenated_again() -> None:
    value = bytes(range(256)) * 2  # 512 bytes: three instances on the wire (RFC 3396)
    msg = reply(options={Opt.MESSAGE_TYPE: b"\x02", 224: value})
    wire = codec.encode(msg)
    assert wire.count(bytes((224, 255))) == 2
    assert codec.decode(wire).options[224] == value


def test_overloaded_file_and_sname_fields_are_read() -> None:
    wire = bytearray(
        codec.encode(reply(options={Opt.MESSAGE_TYPE: b"\x05", Opt.OVERLOAD: b"\x03"}))
    )
    file_off, sname_off = 108, 44
    wire[file_off : file_off + 7] = bytes((Opt.DOMAIN, 4)) + b"file" + b"\xff"
    wire[sname_off : sname_off + 8] = bytes((Opt.DOMAIN, 5)) + b".test" + b"\xff"
    msg = codec.decode(bytes(wire))
    assert msg.options[Opt.DOMAIN] == b"file.test"  # options, then file, then sname
    assert Opt.OVERLOAD not in msg.options
    assert msg.file == b"" and msg.sname == b""


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x02" * 239,
        codec.encode(reply())[:236] + b"\x00\x00\x00\x00",  # no magic cookie
        codec.encode(reply())[:240] + bytes((Opt.HOSTNAME,)),  # length missing
        codec.encode(reply())[:240] + bytes((Opt.HOSTNAME, 10)) + b"abc",  # value truncated
    ],
)
def test_malformed_packets_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode(data)


def test_accept_reply_checks_op_xid_chaddr_and_type() -> None:
    ok = codec.encode(reply())
    assert codec.accept_reply(ok, xid=XID, chaddr=MAC, types=[MessageType.OFFER]) is not None
    assert codec.accept_reply(ok, xid=XID + 1, chaddr=MAC, types=[MessageType.OFFER]) is None
    assert codec.accept_reply(ok, xid=XID, chaddr=b"\x02" * 6, types=[MessageType.OFFER]) is None
    assert codec.accept_reply(ok, xid=XID, chaddr=MAC, types=[MessageType.ACK]) is None
    request = codec.encode(reply(op=BOOTREQUEST))
    assert codec.accept_reply(request, xid=XID, chaddr=MAC, types=[MessageType.OFFER]) is None
    no_type = codec.encode(reply(options={Opt.SERVER_ID: b"\x01\x02\x03\x04"}))
    assert codec.accept_reply(no_type, xid=XID, chaddr=MAC, types=list(MessageType)) is None


# -- option value tables ---------------------------------------------------------------------

NET = IPv4Network
GW = IPv4Address


@pytest.mark.parametrize(
    ("raw", "routes"),
    [
        # RFC 3442 examples: width, significant octets, router
        (bytes([0, 10, 0, 0, 1]), [(NET("0.0.0.0/0"), GW("10.0.0.1"))]),
        (bytes([8, 10, 192, 168, 1, 1]), [(NET("10.0.0.0/8"), GW("192.168.1.1"))]),
        (bytes([24, 10, 17, 0, 10, 0, 0, 1]), [(NET("10.17.0.0/24"), GW("10.0.0.1"))]),
        (bytes([25, 10, 17, 0, 128, 10, 0, 0, 1]), [(NET("10.17.0.128/25"), GW("10.0.0.1"))]),
        (bytes([32, 1, 2, 3, 4, 5, 6, 7, 8]), [(NET("1.2.3.4/32"), GW("5.6.7.8"))]),
        # bits past the prefix length are not part of the destination
        (bytes([20, 10, 1, 255, 0, 0, 0, 0]), [(NET("10.1.240.0/20"), GW("0.0.0.0"))]),
        (
            bytes([16, 172, 16, 192, 168, 77, 1, 0, 192, 168, 77, 254]),
            [(NET("172.16.0.0/16"), GW("192.168.77.1")), (NET("0.0.0.0/0"), GW("192.168.77.254"))],
        ),
    ],
)
def test_classless_routes(raw: bytes, routes: list[tuple[IPv4Network, IPv4Address]]) -> None:
    assert list(options.classless_routes(raw)) == routes
    assert options.classless_routes(options.encode_classless_routes(routes)) == tuple(routes)


@pytest.mark.parametrize(
    "raw", [b"", bytes([33, 1, 2, 3, 4, 5, 6, 7, 8]), bytes([24, 10, 0, 0, 1, 2, 3])]
)
def test_classless_routes_malformed(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        options.classless_routes(raw)


def test_static_routes_option_33_is_classful_and_skips_default() -> None:
    raw = b"".join(
        IPv4Address(a).packed
        for a in [
            "10.0.0.0",
            "192.168.77.2",
            "0.0.0.0",
            "192.168.77.3",
            "172.16.5.9",
            "192.168.77.4",
        ]
    )
    assert options.static_routes(raw) == (
        (NET("10.0.0.0/8"), GW("192.168.77.2")),
        (NET("172.16.5.9/32"), GW("192.168.77.4")),  # host bits set: only that host
    )


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        # RFC 3397 section 4 example: eng.apple.com, marketing.apple.com
        (
            b"\x03eng\x05apple\x03com\x00\x09marketing\xc0\x04",
            ("eng.apple.com", "marketing.apple.com"),
        ),
        (b"\x04corp\x00", ("corp",)),
        (b"\x01a\x01b\x00\x01c\xc0\x00\xc0\x02", ("a.b", "c.a.b", "b")),
        (
            options.encode_domain_search(["lan.test", "svc.cluster.local"]),
            ("lan.test", "svc.cluster.local"),
        ),
    ],
)
def test_domain_search(raw: bytes, names: tuple[str, ...]) -> None:
    assert options.domain_search(raw) == names


@pytest.mark.parametrize(
    "raw",
    [
        b"\x03eng",  # runs past the end
        b"\xc0\x00",  # pointer to itself
        b"\x01a\xc0\x02",  # pointer forward / loop
        b"\x01a\x00\x01b\xc0\x03",  # pointer into the current name: loop
        b"\x40abc\x00",  # reserved label type
        b"\x03a.b\x00",  # dot inside a label
        b"\x02\xff\xfe\x00",  # not ASCII
        (b"\x3f" + b"a" * 63) * 5 + b"\x00",  # longer than 255
        b"",
    ],
)
def test_domain_search_malformed(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        options.domain_search(raw)


@pytest.mark.parametrize(
    ("raw", "prefix"),
    [(b"\xff\xff\xff\x00", 24), (b"\x00\x00\x00\x00", 0), (b"\xff\xff\xff\xff", 32)],
)
def test_netmask(raw: bytes, prefix: int) -> None:
    assert options.netmask_prefix(raw) == prefix


def test_noncontiguous_netmask_rejected() -> None:
    with pytest.raises(DecodeError):
        options.netmask_prefix(b"\xff\x00\xff\x00")


# -- framing ---------------------------------------------------------------------------------


def test_ip_udp_round_trip_and_checksums() -> None:
    payload = codec.encode(reply())
    pkt = codec.build_ip_udp(
        payload,
        src=IPv4Address("192.168.77.1"),
        dst=IPv4Address("192.168.77.120"),
        sport=67,
        dport=68,
    )
    dgram = codec.parse_ip_udp(pkt)
    assert dgram is not None
    assert (dgram.src, dgram.dst, dgram.sport, dgram.dport) == (
        IPv4Address("192.168.77.1"),
        IPv4Address("192.168.77.120"),
        67,
        68,
    )
    assert dgram.payload == payload
    corrupt = bytearray(pkt)
    corrupt[8] ^= 0xFF  # TTL: the header checksum no longer matches
    assert codec.parse_ip_udp(bytes(corrupt)) is None
    fragment = bytearray(pkt)
    fragment[6] |= 0x20  # more fragments
    assert codec.parse_ip_udp(bytes(fragment)) is None


def test_arp_conflict_rules() -> None:
    addr = IPv4Address("192.168.77.120")
    other = b"\x02\x00\x00\x00\x00\x09"
    reply_ = arp.parse_arp(arp.build_arp(arp.ARP_REPLY, other, addr, MAC, codec.ZERO))
    probe = arp.parse_arp(arp.build_arp(arp.ARP_REQUEST, other, codec.ZERO, bytes(6), addr))
    own = arp.parse_arp(arp.build_arp(arp.ARP_REQUEST, MAC, codec.ZERO, bytes(6), addr))
    unrelated = arp.parse_arp(
        arp.build_arp(arp.ARP_REQUEST, other, IPv4Address("192.168.77.1"), bytes(6), addr)
    )
    assert reply_ and probe and own and unrelated
    assert codec.arp_conflict(reply_, addr, MAC)
    # Another client still probing for it is left to the server's arbitration (NAK).
    assert not codec.arp_conflict(probe, addr, MAC)
    assert not codec.arp_conflict(own, addr, MAC)
    assert not codec.arp_conflict(unrelated, addr, MAC)  # a router asking who has it


# -- properties ------------------------------------------------------------------------------

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DECODERS = [
    options.classless_routes,
    options.static_routes,
    options.domain_search,
    options.ipv4_list,
    options.netmask_prefix,
    options.text,
    options.u16,
    options.u32,
]


@FUZZ
@given(st.binary(max_size=700))
def test_arbitrary_bytes_never_crash_the_decoders(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        codec.decode(data)
    assert codec.accept_reply(data, xid=XID, chaddr=MAC, types=list(MessageType)) is None or (
        data[4:8] == XID.to_bytes(4, "big")
    )
    codec.parse_ip_udp(data)
    arp.parse_arp(data)
    for decoder in DECODERS:
        with contextlib.suppress(DecodeError):
            decoder(data)


def _mutations() -> st.SearchStrategy[bytes]:
    base = codec.encode(
        reply(
            MessageType.ACK,
            options={
                Opt.MESSAGE_TYPE: b"\x05",
                Opt.SERVER_ID: b"\xc0\xa8\x4d\x01",
                Opt.CLASSLESS_ROUTES: bytes([0, 192, 168, 77, 1]),
                Opt.DOMAIN_SEARCH: b"\x03eng\x05apple\x03com\x00\x09marketing\xc0\x04",
                Opt.LEASE_TIME: b"\x00\x00\x00\x78",
            },
        )
    )

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 8))):
            kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
            if not data:
                break
            pos = draw(st.integers(0, len(data) - 1))
            if kind == "flip":
                data[pos] ^= 1 << draw(st.integers(0, 7))
            elif kind == "set":
                data[pos] = draw(st.integers(0, 255))
            elif kind == "truncate":
                del data[pos:]
            elif kind == "insert":
                data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
            else:
                del data[pos : pos + draw(st.integers(1, 8))]
        return bytes(data)

    return mutate()


@FUZZ
@given(_mutations(), st.sampled_from([XID, XID ^ 1]), st.sampled_from([MAC, b"\x02" * 6]))
def test_mutated_replies_never_crash_and_foreign_ones_are_never_accepted(
    data: bytes, xid: int, chaddr: bytes
) -> None:
    from cni_bridge_dhcp.agent.dhcp.lease import ack_info

    msg = codec.accept_reply(data, xid=xid, chaddr=chaddr, types=[MessageType.ACK, MessageType.NAK])
    if msg is None:
        return
    # Accepted: it must be a reply to exactly our transaction, from a server.
    assert msg.op == BOOTREPLY and msg.htype == codec.HTYPE_ETHER
    assert msg.xid == xid and msg.chaddr == chaddr
    assert data[0] == BOOTREPLY and data[4:8] == xid.to_bytes(4, "big")
    assert data[2] == 6 and data[28:34] == chaddr
    assert msg.message_type in (MessageType.ACK, MessageType.NAK)
    # And turning it into lease parameters never raises either.
    info = ack_info(msg, IPv4Address("192.168.77.1"))
    assert 0 < info.t1 < info.t2 < info.lease_time
