"""The one-definition helpers: ARP packets, flock with timeout, sysctl access, netlink errors."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from cni_bridge_dhcp.agent.datapath import arp, sysctl
from cni_bridge_dhcp.agent.datapath.netlink import NetlinkError, describe, tolerate
from cni_bridge_dhcp.agent.runtime.locking import flock_with_timeout

MAC = bytes.fromhex("020000000001")


def test_arp_round_trip_and_wire_layout() -> None:
    packet = arp.build_arp(
        arp.ARP_REQUEST, MAC, IPv4Address("10.0.0.1"), bytes(6), IPv4Address("10.0.0.2")
    )
    assert len(packet) == 28
    assert packet[:8] == bytes.fromhex("0001080006040001")  # Ethernet, IPv4, 6, 4, request
    parsed = arp.parse_arp(packet + b"\0" * 18)  # Ethernet padding after the packet
    assert parsed == arp.Arp(
        arp.ARP_REQUEST, MAC, IPv4Address("10.0.0.1"), bytes(6), IPv4Address("10.0.0.2")
    )


@pytest.mark.parametrize(
    ("offset", "value"),
    [(0, b"\x00\x06"), (2, b"\x86\xdd"), (4, b"\x08"), (5, b"\x10"), (6, b"\x00\x03")],
)
def test_arp_parse_rejects_other_hardware_protocols_and_ops(offset: int, value: bytes) -> None:
    packet = bytearray(
        arp.build_arp(arp.ARP_REPLY, MAC, IPv4Address("1.2.3.4"), MAC, IPv4Address("1.2.3.5"))
    )
    packet[offset : offset + len(value)] = value
    assert arp.parse_arp(bytes(packet)) is None
    assert arp.parse_arp(bytes(packet[:27])) is None


def test_flock_with_timeout_waits_then_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder = os.open(path, os.O_RDWR | os.O_CREAT)
    other = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        start = time.monotonic()
        assert not flock_with_timeout(other, 0.15)
        assert time.monotonic() - start >= 0.15
        os.close(holder)  # closing releases it
        holder = -1
        assert flock_with_timeout(other, 0.0)
    finally:
        os.close(other)
        if holder >= 0:
            os.close(holder)


def test_sysctl_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sysctl, "PROC_SYS", tmp_path)
    (tmp_path / "net").mkdir()
    (tmp_path / "net/knob").write_text("0\n")
    assert sysctl.read_sysctl("net/knob") == "0"
    assert sysctl.read_sysctl("net/missing") is None
    assert sysctl.ensure_sysctl("net/knob", "1") == "0"
    assert sysctl.ensure_sysctl("net/knob", "1") is None  # already set: unchanged
    assert sysctl.write_sysctl("net/knob", "2") and sysctl.read_sysctl("net/knob") == "2"
    assert not sysctl.write_sysctl("nodir/knob", "1")  # best effort
    assert not sysctl.write_sysctl_if_present("nodir/knob", "1")
    with pytest.raises(IsADirectoryError):
        sysctl.write_sysctl_if_present("net", "1")  # only a missing knob is tolerated
    with pytest.raises(FileNotFoundError):
        sysctl.ensure_sysctl("nodir/knob", "1")


def test_tolerate_swallows_only_the_named_errnos() -> None:
    with tolerate(errno.EEXIST, errno.ENOENT):
        raise NetlinkError(errno.EEXIST, "File exists")
    with pytest.raises(NetlinkError), tolerate(errno.EEXIST):
        raise NetlinkError(errno.ENODEV, "No such device")
    assert describe(NetlinkError(errno.ENODEV, "No such device")) == "No such device (errno 19)"
    assert describe(ValueError()) == "ValueError"
