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
    ]
    link = parsed[0][2]
    assert isinstance(link, rtnl.Link) and link.name == "eth0" and link.master is None
    assert [item for _, _, item in parsed[1:]] == [errno.ENODEV, 0]


def test_truncated_input_is_not_read_past_its_end() -> None:
    data = _newlink(4, _nla(rtnl.IFLA_IFNAME, b"eth1\0"))
    assert rtnl.parse(data[:-3]) == []
    # an attribute claiming more than the message holds is dropped, the link kept
    bad = _newlink(4, struct.pack("=HH", 200, rtnl.IFLA_IFNAME) + b"eth1")
    [(_, _, link)] = rtnl.parse(bad)
    assert isinstance(link, rtnl.Link) and link.index == 4 and link.name is None
