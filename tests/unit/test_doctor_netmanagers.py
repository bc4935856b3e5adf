"""doctor's network-manager check: netplan, systemd-networkd, NetworkManager, ifupdown files
that still configure the uplink, and the snippets it proposes instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from cni_bridge_dhcp.ops.doctor import checks as dc
from cni_bridge_dhcp.ops.doctor.facts.managers import gather_manager_configs

MAC = "52:54:00:12:34:56"


def run(kind: str, text: str, *, uplink: str = "eth0", bridge: str = "cni0") -> list[dc.Finding]:
    return dc.check_network_managers(
        [dc.ConfigText(f"/etc/x.{kind}", kind, text)], uplink, bridge, MAC
    )


def problems(kind: str, text: str, **kw: str) -> list[dc.Finding]:
    return [f for f in run(kind, text, **kw) if not f.ok]


# ----------------------------------------------------------------------------- netplan

NETPLAN_DHCP = """\
# This is the network config written by 'subiquity'
network:
  version: 2
  ethernets:
    eth0:
      dhcp4: true
      match:
        macaddress: "52:54:00:12:34:56"
"""

NETPLAN_BRIDGED = """\
network:
  version: 2
  renderer: networkd
  ethernets:
    eth0: {dhcp4: no}
  bridges:
    cni0:
      interfaces: [eth0]
      dhcp4: yes
      parameters:
        stp: false
        forward-delay: 0
"""

NETPLAN_STATIC_BLOCK_LISTS = """\
network:
  ethernets:
    enp1s0:
      addresses:
        - 192.168.77.10/24
      routes:
        - to: default
          via: 192.168.77.1
      nameservers:
        addresses: [192.168.77.1]
"""


def test_netplan_dhcp_on_the_uplink_is_reported_with_a_bridge_snippet() -> None:
    (finding,) = problems("netplan", NETPLAN_DHCP)
    assert "configures eth0 itself (dhcp4: true)" in finding.problem
    assert "bridges:\n    cni0:\n      interfaces: [eth0]" in finding.fix
    assert "macaddress: 52:54:00:12:34:56" in finding.fix  # keeps the DHCP reservation
    assert "dhcp4: true" in finding.fix.split("bridges:")[1]
    # the snippet itself is valid netplan for the parser
    snippet = finding.fix[finding.fix.index("network:") : finding.fix.index("\nthen")]
    doc = dc.load_yaml(snippet)
    assert doc["network"]["bridges"]["cni0"]["interfaces"] == ["eth0"]


def test_netplan_that_already_bridges_the_uplink_into_our_bridge_is_fine() -> None:
    assert problems("netplan", NETPLAN_BRIDGED) == []


def test_netplan_bridge_with_another_name() -> None:
    (finding,) = problems("netplan", NETPLAN_BRIDGED.replace("cni0", "br0"))
    assert "into 'br0', but the plugin uses 'cni0'" in finding.problem


def test_netplan_static_addresses_under_a_match_glob() -> None:
    text = NETPLAN_STATIC_BLOCK_LISTS.replace(
        "    enp1s0:\n", "    lan:\n      match:\n        name: enp*\n"
    )
    (finding,) = problems("netplan", text, uplink="enp1s0")
    assert "addresses" in finding.problem and "routes" in finding.problem
    assert "addresses: [<the node's address>/<prefix>]" in finding.fix


def test_netplan_for_another_interface_is_ignored() -> None:
    assert (
        problems("netplan", NETPLAN_DHCP.replace("eth0", "eth1").replace("macaddress", "driver"))
        == []
    )


def test_unparseable_netplan_mentioning_the_uplink_is_still_reported() -> None:
    (finding,) = problems("netplan", "network:\n  ethernets:\n    eth0: &anchor\n  - broken: [\n")
    assert "mentions eth0" in finding.problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nb: [x, 'y z']\n", {"a": "1", "b": ["x", "y z"]}),
        ("a:\n  - k: v\n    j: w\n  - plain\n", {"a": [{"k": "v", "j": "w"}, "plain"]}),
        ("a:\n- one\n- two\n", {"a": ["one", "two"]}),
        ("m: {x: 1, y: [a, b]}  # c\n", {"m": {"x": "1", "y": ["a", "b"]}}),
        ('"quoted:key": "#not a comment"\n', {"quoted:key": "#not a comment"}),
    ],
)
def test_yaml_subset(text: str, expected: object) -> None:
    assert dc.load_yaml(text) == expected


def test_yaml_subset_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError):
        dc.load_yaml("a: 1\n   b: 2\n")


# ----------------------------------------------------------------------------- networkd

NETWORKD_DHCP = """\
[Match]
Name=eth0 eth1

[Network]
DHCP=yes
"""


def test_networkd_dhcp_on_the_uplink_gets_netdev_and_network_files() -> None:
    (finding,) = problems("networkd", NETWORKD_DHCP)
    assert "systemd-networkd" in finding.problem
    assert "[NetDev]\nName=cni0\nKind=bridge\nMACAddress=52:54:00:12:34:56" in finding.fix
    assert "[Match]\nName=eth0\n[Network]\nBridge=cni0" in finding.fix
    assert "[Match]\nName=cni0\n[Network]\nDHCP=ipv4" in finding.fix


def test_networkd_static_address_section_and_glob_match() -> None:
    text = "[Match]\nName=en*\n\n[Address]\nAddress=192.168.77.10/24\n"
    (finding,) = problems("networkd", text, uplink="enp3s0")
    assert "Address=<the node's address>" in finding.fix


def test_networkd_port_of_our_bridge_or_link_only_files_are_fine() -> None:
    assert problems("networkd", "[Match]\nName=eth0\n[Network]\nBridge=cni0\n") == []
    assert problems("networkd", "[Match]\nName=eth0\n[Link]\nMTUBytes=9000\n") == []
    assert problems("networkd", "[Match]\nName=wlan0\n[Network]\nDHCP=yes\n") == []


def test_networkd_matching_by_mac() -> None:
    text = f"[Match]\nMACAddress={MAC.upper()}\n[Network]\nDHCP=ipv4\n"
    assert len(problems("networkd", text)) == 1


# ----------------------------------------------------------------------------- NetworkManager

NM_ETH = """\
[connection]
id=Wired connection 1
uuid=8b9b3b3e-0000-4000-8000-000000000001
type=ethernet
interface-name=eth0

[ipv4]
method=auto

[ipv6]
method=auto
"""


def test_network_manager_profile_on_the_uplink() -> None:
    (finding,) = problems("nm", NM_ETH)
    assert "'Wired connection 1'" in finding.problem and "ipv4.method auto" in finding.problem
    assert "nmcli con add type bridge-slave ifname eth0 master cni0" in finding.fix
    assert "unmanaged-devices=interface-name:eth0;interface-name:cni0" in finding.fix


def test_network_manager_bridge_port_and_disabled_profiles_are_fine() -> None:
    port = NM_ETH.replace(
        "interface-name=eth0", "interface-name=eth0\nmaster=cni0\nslave-type=bridge"
    )
    assert problems("nm", port) == []
    off = NM_ETH.replace("method=auto", "method=disabled")
    assert problems("nm", off) == []


# ----------------------------------------------------------------------------- ifupdown


def test_ifupdown_dhcp_on_the_uplink() -> None:
    text = "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n"
    (finding,) = problems("ifupdown", text)
    assert "inet dhcp" in finding.problem
    assert "iface cni0 inet dhcp\n    bridge_ports eth0" in finding.fix


def test_ifupdown_bridge_with_the_uplink_is_fine() -> None:
    text = "iface eth0 inet manual\n\nauto cni0\niface cni0 inet dhcp\n    bridge_ports eth0\n"
    assert problems("ifupdown", text) == []


# ----------------------------------------------------------------------------- gathering


def test_gathering_reads_every_manager_under_root_and_skips_netplan_output(tmp_path: Path) -> None:
    files = {
        "etc/netplan/50-cloud-init.yaml": NETPLAN_DHCP,
        "etc/systemd/network/20-wired.network": NETWORKD_DHCP,
        "run/systemd/network/10-netplan-eth0.network": NETWORKD_DHCP,  # generated by netplan
        "etc/NetworkManager/system-connections/eth.nmconnection": NM_ETH,
        "etc/network/interfaces": "iface eth0 inet dhcp\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    configs = gather_manager_configs(tmp_path)
    assert sorted(c.path for c in configs) == [
        "/etc/NetworkManager/system-connections/eth.nmconnection",
        "/etc/netplan/50-cloud-init.yaml",
        "/etc/network/interfaces",
        "/etc/systemd/network/20-wired.network",
    ]
    found = dc.check_network_managers(configs, "eth0", "cni0", MAC)
    assert len([f for f in found if not f.ok]) == 4


def test_nothing_under_root_is_healthy(tmp_path: Path) -> None:
    (finding,) = dc.check_network_managers(gather_manager_configs(tmp_path), "eth0", "cni0", None)
    assert finding.ok
