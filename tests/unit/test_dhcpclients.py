"""Finding the DHCP client of the node's address at takeover, and the identity it used
(agent/uplink/dhcpclients.py), on fake /proc, /run and /var/lib trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from cni_bridge_dhcp.agent.uplink import dhcpclients as dc
from cni_bridge_dhcp.agent.uplink.plan import AddrSnap, UplinkSnapshot
from cni_bridge_dhcp.cni.errors import ErrorCode

MAC = "52:54:00:12:34:56"


def _proc(root: Path, pid: int, *argv: str) -> None:
    d = root / "proc" / str(pid)
    d.mkdir(parents=True)
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    fields = ["S"] + ["0"] * 18 + ["4242"] + ["0"] * 10
    (d / "stat").write_text(f"{pid} (x y) " + " ".join(fields) + "\n")


def _paths(root: Path) -> dc.Paths:
    return dc.Paths(proc=root / "proc", run=root / "run", var_lib=root / "var" / "lib")


def test_udhcpc_naming_the_uplink_defaults_to_mac_client_id(tmp_path: Path) -> None:
    _proc(tmp_path, 10, "busybox", "udhcpc", "-f", "-i", "eth0")
    _proc(tmp_path, 11, "udhcpc", "-i", "eth1")  # another interface: not ours
    found = dc.find_clients("eth0", 2, "192.0.2.10", _paths(tmp_path))
    assert [(c.manager, c.pid, c.starttime) for c in found] == [("udhcpc", 10, "4242")]
    assert dc.node_client_id(found, MAC) == "01525400123456"


@pytest.mark.parametrize(
    ("args", "expected"),
    [(("-C",), ""), (("-x", "0x3d:01AABBCCDDEEFF"), "01aabbccddeeff"), (("-x61:ff00",), "ff00")],
)
def test_udhcpc_client_id_options(tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    _proc(tmp_path, 10, "/sbin/udhcpc", "-i", "eth0", *args)
    found = dc.find_clients("eth0", 2, "192.0.2.10", _paths(tmp_path))
    assert dc.node_client_id(found, MAC) == expected


def test_dhclient_client_id_from_lease_file_then_config(tmp_path: Path) -> None:
    leases = tmp_path / "l.leases"
    leases.write_text(
        'lease {\n  interface "eth0";\n  fixed-address 192.0.2.10;\n'
        "  option dhcp-client-identifier 1:52:54:0:12:34:56;\n}\n"
        'lease {\n  interface "eth1";\n  option dhcp-client-identifier "other";\n}\n'
    )
    conf = tmp_path / "c.conf"
    conf.write_text('send dhcp-client-identifier "global";\n')
    _proc(tmp_path, 20, "dhclient", "-cf", str(conf), "-lf", str(leases), "eth0")
    found = dc.find_clients("eth0", 2, "192.0.2.10", _paths(tmp_path))
    assert found[0].manager == "dhclient"
    assert dc.node_client_id(found, MAC) == "01525400123456"
    leases.write_text('lease {\n  interface "eth0";\n  fixed-address 192.0.2.10;\n}\n')
    found = dc.find_clients("eth0", 2, "192.0.2.10", _paths(tmp_path))
    assert dc.node_client_id(found, MAC) == b"global".hex()
    conf.write_text('interface "eth0" {\n send dhcp-client-identifier "mine";\n}\n')
    found = dc.find_clients("eth0", 2, "192.0.2.10", _paths(tmp_path))
    assert dc.node_client_id(found, MAC) == b"mine".hex()
    conf.write_text("")
    found = dc.find_clients("eth0", 2, "192.0.2.10", _paths(tmp_path))
    assert dc.node_client_id(found, MAC) == ""  # dhclient's default: no option 61


def test_networkd_lease_is_refused_with_code_7_naming_it(tmp_path: Path) -> None:
    leases = tmp_path / "run" / "systemd" / "netif" / "leases"
    leases.mkdir(parents=True)
    (leases / "2").write_text("# generated\nADDRESS=192.0.2.10\nCLIENTID=ffaabb\n")
    (leases / "3").write_text("ADDRESS=192.0.2.99\n")
    found = dc.find_clients("eth0", 2, "192.0.2.10", _paths(tmp_path))
    assert [(c.manager, c.client_id) for c in found] == [("systemd-networkd", "ffaabb")]
    err = dc.refusal(found, "eth0", "cni0", "192.0.2.10/24", MAC)
    assert err is not None and err.code == ErrorCode.INVALID_CONFIG
    assert "systemd-networkd" in err.msg and "bridges:" in err.details and "cni0" in err.details
    # another address under that ifindex (another namespace's link): not ours
    assert dc.find_clients("eth0", 3, "192.0.2.10", _paths(tmp_path)) == []


def test_networkmanager_dhclient_is_refused(tmp_path: Path) -> None:
    _proc(
        tmp_path,
        30,
        "/sbin/dhclient",
        "-lf",
        "/var/lib/NetworkManager/dhclient-x-eth0.lease",
        "eth0",
    )
    found = dc.find_clients("eth0", 2, "192.0.2.10", _paths(tmp_path))
    err = dc.refusal(found, "eth0", "cni0", "192.0.2.10/24", MAC)
    assert err is not None and "NetworkManager" in err.msg and "nmcli" in err.details


def test_dhcpcd_client_id_echoed_in_its_saved_ack(tmp_path: Path) -> None:
    lease = tmp_path / "var" / "lib" / "dhcpcd" / "eth0.lease"
    lease.parent.mkdir(parents=True)
    lease.write_bytes(bytes(236) + b"\x63\x82\x53\x63" + b"\x35\x01\x05\x3d\x03\xff\x01\x02\xff")
    _proc(tmp_path, 40, "dhcpcd", "-q", "eth0")
    found = dc.find_clients("eth0", 2, "192.0.2.10", _paths(tmp_path))
    assert dc.node_client_id(found, MAC) == "ff0102"


def _snap(*addrs: AddrSnap) -> UplinkSnapshot:
    return UplinkSnapshot("eth0", 2, MAC, 1500, True, addrs, ())


def test_only_a_finite_lifetime_primary_ipv4_is_dynamic() -> None:
    static = AddrSnap(family=2, address="192.0.2.10", prefixlen=24)
    leased = AddrSnap(family=2, address="192.0.2.10", prefixlen=24, valid_lft=30)
    v6 = AddrSnap(family=10, address="2001:db8::1", prefixlen=64, valid_lft=30)
    assert dc.dynamic_ipv4(_snap(static, v6)) is None
    assert dc.dynamic_ipv4(_snap(leased)) == leased


def test_record_round_trips(tmp_path: Path) -> None:
    rec = dc.NodeDhcp(
        "eth0", "cni0", MAC, "192.0.2.10/24", "01aa", 30,
        clients=[dc.PrevClient("udhcpc", 5, "77", ("udhcpc", "-i", "eth0"))],
    )  # fmt: skip
    rec.paused = list(rec.clients)
    dc.save_record(tmp_path, rec)
    assert dc.load_record(tmp_path) == rec
    dc.remove_record(tmp_path)
    assert dc.load_record(tmp_path) is None


def test_resume_skips_a_reused_pid(tmp_path: Path) -> None:
    _proc(tmp_path, 50, "udhcpc", "-i", "eth0")
    stale = dc.PrevClient("udhcpc", 50, "1")  # started at another time: not the one we paused
    assert dc.resume([stale], _paths(tmp_path)) == []
