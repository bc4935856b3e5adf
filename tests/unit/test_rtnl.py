"""The raw rtnetlink parser (agent/datapath/rtnl.py) on messages laid out as the kernel
sends them (no root)."""

from __future__ import annotations

import errno
import struct

from cni_bridge_dhcp.agent.datapath import rtnl


def _nla(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _msg(msg_type: int, seq: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), msg_type, 0, seq, 0) + body


def _newlink(index: int, *attrs: bytes, seq: int = 0, msg_type: int = rtnl.RTM_NEWLINK) -> bytes:
    return _msg(msg_type, seq, struct.pack("=BxHiII", 0, 1, index, 0, 0) + b"".join(attrs))


def test_link_attributes_are_read() -> None:
    kind = _nla(rtnl.IFLA_LINKINFO | 0x8000, _nla(rtnl.IFLA_INFO_KIND, b"veth\0"))
    data = _newlink(
        7,
        _nla(rtnl.IFLA_IFNAME, b"veth1a2b\0"),
        _nla(rtnl.IFLA_ADDRESS, bytes.fromhex("0a1b2c3d4e5f")),
        _nla(rtnl.IFLA_MTU, struct.pack("=I", 1400)),
        _nla(rtnl.IFLA_MASTER, struct.pack("=I", 3)),
        kind,
        seq=5,
    )
    [(msg_type, seq, link)] = rtnl.parse(data)
    assert (msg_type, seq) == (rtnl.RTM_NEWLINK, 5)
    assert link == rtnl.Link(
        event=rtnl.RTM_NEWLINK,
        index=7,
        name="veth1a2b",
        address="0a:1b:2c:3d:4e:5f",
        master=3,
        mtu=1400,
        kind="veth",
    )


def test_several_messages_errors_and_acks_in_one_datagram() -> None:
    data = (
        _newlink(2, _nla(rtnl.IFLA_IFNAME, b"eth0\0"), msg_type=rtnl.RTM_DELLINK)
        + _msg(rtnl.NLMSG_ERROR, 9, struct.pack("=i", -errno.ENODEV) + b"\0" * 16)
        + _msg(rtnl.NLMSG_ERROR, 10, struct.pack("=i", 0) + b"\0" * 16)
        + _msg(rtnl.NLMSG_DONE, 11, struct.pack("=i", 0))
    )
    parsed = rtnl.parse(data)
    assert [(t, s) for t, s, _ in parsed] == [
        (rtnl.RTM_DELLINK, 0),
        (rtnl.NLMSG_ERROR, 9),
        (rtnl.NLMSG_ERROR, 10),
        (rtnl.NLMSG_DONE, 11),
    ]
    link = parsed[0][2]
    assert isinstance(link, rtnl.Link) and link.name == "eth0" and link.master is None
    assert [item for _, _, item in parsed[1:]] == [errno.ENODEV, 0, 0]


def test_address_and_route_messages() -> None:
    addr = _msg(
        rtnl.RTM_NEWADDR,
        3,
        struct.pack("=BBBBI", 10, 64, 0x80, 0, 5)
        + _nla(rtnl.IFA_ADDRESS, bytes.fromhex("20010db8000000000000000000000010"))
        + _nla(rtnl.IFA_FLAGS, struct.pack("=I", 0x240)),
    )
    route = _msg(
        rtnl.RTM_NEWROUTE,
        3,
        struct.pack("=BBBBBBBBI", 10, 0, 0, 0, 254, 9, 0, 1, 0)
        + _nla(rtnl.RTA_GATEWAY, bytes.fromhex("fe800000000000000000000000000001"))
        + _nla(rtnl.RTA_OIF, struct.pack("=I", 5))
        + _nla(rtnl.RTA_TABLE, struct.pack("=I", 254)),
    )
    [(_, _, a), (_, _, r)] = rtnl.parse(addr + route)
    # IFA_FLAGS (32 bits) wins over the 8-bit ifa_flags, as the kernel means it
    assert a == rtnl.Addr(10, 64, 0x240, 0, 5, "2001:db8::10")
    assert r == rtnl.Route(10, 0, 254, 9, 0, 5, None, "fe80::1")


def test_veth_request_layout() -> None:
    """What add_veth sends: the kernel's veth peer is an ifinfomsg nested in INFO_DATA."""
    sent: list[bytes] = []

    class Sock:
        def sendto(self, data: bytes, addr: object) -> None:
            sent.append(data)

        def recv(self, size: int) -> bytes:
            seq = struct.unpack_from("=IHHII", sent[-1])[3]
            return _msg(rtnl.NLMSG_ERROR, seq, struct.pack("=i", 0) + sent[-1][:16])

        def close(self) -> None:
            pass

    rt = rtnl.Rtnl(Sock())  # type: ignore[arg-type]
    rt.add_veth("eth0", "veth01", 9, mtu=1400, peer_mtu=1500, address="02:00:00:00:00:01")
    length, msg_type, flags, _, _ = struct.unpack_from("=IHHII", sent[0])
    assert (length, msg_type) == (len(sent[0]), rtnl.RTM_NEWLINK)
    assert flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK | rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
    attrs = rtnl._attrs(sent[0], 32, len(sent[0]))
    assert attrs[rtnl.IFLA_IFNAME] == b"eth0\0"
    assert attrs[rtnl.IFLA_ADDRESS] == bytes.fromhex("020000000001")
    info = rtnl._attrs(attrs[rtnl.IFLA_LINKINFO], 0, len(attrs[rtnl.IFLA_LINKINFO]))
    assert info[rtnl.IFLA_INFO_KIND] == b"veth\0"
    data = info[rtnl.IFLA_INFO_DATA]
    peer = rtnl._attrs(data, 0, len(data))[rtnl.VETH_INFO_PEER]
    peer_attrs = rtnl._attrs(peer, 16, len(peer))
    assert peer_attrs[rtnl.IFLA_IFNAME] == b"veth01\0"
    assert struct.unpack("=I", peer_attrs[rtnl.IFLA_NET_NS_FD]) == (9,)
    assert struct.unpack("=I", peer_attrs[rtnl.IFLA_MTU]) == (1500,)


def test_truncated_input_is_not_read_past_its_end() -> None:
    data = _newlink(4, _nla(rtnl.IFLA_IFNAME, b"eth1\0"))
    assert rtnl.parse(data[:-3]) == []
    # an attribute claiming more than the message holds is dropped, the link kept
    bad = _newlink(4, struct.pack("=HH", 200, rtnl.IFLA_IFNAME) + b"eth1")
    [(_, _, link)] = rtnl.parse(bad)
    assert isinstance(link, rtnl.Link) and link.index == 4 and link.name is None
