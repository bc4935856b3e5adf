"""doctor's config readers on real-world netplan, systemd-networkd, NetworkManager and
ifupdown files: the YAML forms the old hand-written subset reader refused (multi-line flow
lists, anchors, directives, block scalars), and the systemd INI quirks configparser must be
told about (repeated keys and sections, case, ``%``, indentation)."""

from __future__ import annotations

import pytest

from cni_bridge_dhcp.ops.doctor import checks as dc
from cni_bridge_dhcp.ops.doctor.textconf import load_yaml, read_ini

MAC = "52:54:00:12:34:56"


def problems(kind: str, text: str, *, uplink: str = "eth0", mac: str = MAC) -> list[dc.Finding]:
    findings = dc.check_network_managers(
        [dc.ConfigText(f"/etc/x.{kind}", kind, text)], uplink, "cni0", mac
    )
    return [f for f in findings if not f.ok]


# ----------------------------------------------------------------------------- netplan

# What the Ubuntu cloud images and installers write, with the forms that are valid YAML
# and valid netplan but outside the old subset: a flow list over two lines, an anchor
# shared by two stanzas, a %YAML directive, a literal block scalar.
NETPLAN_FLOW_OVER_LINES = """\
network:
  version: 2
  ethernets:
    eth0:
      addresses: [192.168.77.10/24,
                  "fd00::10/64"]   # both families
      routes: [{to: default, via: 192.168.77.1}]
      nameservers: {addresses: [192.168.77.1], search: [lan]}
"""

NETPLAN_ANCHOR = """\
%YAML 1.1
---
network:
  version: 2
  ethernets:
    common: &base
      dhcp4: true
      dhcp-identifier: mac
    eth0: *base
"""

NETPLAN_BLOCK_SCALAR = """\
network:
  version: 2
  ethernets:
    eth0:
      dhcp4: yes
      optional: true
  wifis:
    wlan0:
      access-points:
        "home net":
          password: |
            s3cret # not a comment
"""


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (NETPLAN_FLOW_OVER_LINES, "(addresses, routes)"),
        (NETPLAN_ANCHOR, "(dhcp4: true)"),
        (NETPLAN_BLOCK_SCALAR, "(dhcp4: true)"),
    ],
)
def test_netplan_forms_beyond_the_old_subset_are_read(text: str, words: str) -> None:
    (finding,) = problems("netplan", text)
    assert f"configures eth0 itself {words}" in finding.problem
    assert "not parsed" not in finding.problem


def test_yaml_keeps_macs_and_numbers_as_text_like_netplan() -> None:
    # plain YAML 1.1 reads 10:22:33:44:55:50 as a base-60 integer and 1500 as a number
    doc = load_yaml("m: 10:22:33:44:55:50\nmtu: 1500\nv: 2\nd: yes\nn: ~\nq: 'on'\n")
    expected = {"m": "10:22:33:44:55:50", "mtu": "1500", "v": "2", "d": True, "n": None, "q": "on"}
    assert doc == expected


def test_netplan_matching_an_all_digit_mac_unquoted() -> None:
    text = "network:\n  ethernets:\n    lan:\n      match:\n        macaddress: 10:22:33:44:55:50\n      dhcp4: true\n"
    (finding,) = problems("netplan", text, uplink="enp1s0", mac="10:22:33:44:55:50")
    assert "configures enp1s0 itself (dhcp4: true)" in finding.problem


def test_quoted_hash_and_trailing_comment() -> None:
    doc = load_yaml(
        'network:\n  ethernets:\n    "eth0":  # the uplink\n      dhcp4: "no"  # quoted\n'
    )
    assert doc == {"network": {"ethernets": {"eth0": {"dhcp4": "no"}}}}


# ----------------------------------------------------------------------------- networkd


def test_ini_repeated_keys_and_sections_add_up() -> None:
    ini = read_ini(
        "[Match]\nName=eth1\nName=eth0\n\n[Network]\nAddress=192.168.77.10/24\n"
        "Address=fd00::10/64\n\n[Address]\nAddress=10.0.0.1/8\n[Address]\nAddress=10.0.0.2/8\n"
    )
    assert ini["Match"]["Name"] == ["eth1", "eth0"]
    assert ini["Network"]["Address"] == ["192.168.77.10/24", "fd00::10/64"]
    assert ini["Address"]["Address"] == ["10.0.0.1/8", "10.0.0.2/8"]


def test_networkd_repeated_match_name_still_matches_the_uplink() -> None:
    # systemd concatenates repeated Name= lines: the file matches eth0 too
    text = "[Match]\nName=eth1\nName=eth0\n\n[Network]\nDHCP=yes\n"
    (finding,) = problems("networkd", text)
    assert "configures eth0 itself (DHCP)" in finding.problem


def test_ini_quirks_case_percent_indentation_preamble_no_value() -> None:
    ini = read_ini(
        "stray=1\n# comment\n; comment\n[Match]\n  Name=eth0\nname=other\n"
        "[Network]\nDescription=50% of the %H uplink\nKeepConfiguration\nDHCP = ipv4\n"
    )
    assert ini == {
        "Match": {"Name": ["eth0"], "name": ["other"]},
        "Network": {"Description": ["50% of the %H uplink"], "DHCP": ["ipv4"]},
    }


def test_a_broken_section_header_does_not_open_the_section() -> None:
    text = "[Match\nName=eth0\n[Network]\nDHCP=yes\n"
    assert read_ini(text) == {"Network": {"DHCP": ["yes"]}}
    assert problems("networkd", text) == []


# ----------------------------------------------------------------------------- NetworkManager

# as nmcli writes it on Fedora / RHEL 9 (keyfile plugin), with a % in the profile name
NM_PROFILE = """\
[connection]
id=Wired 100% eth0
uuid=5fcf0a4c-3f7a-3d06-a9e8-43b8d6c3b2a1
type=ethernet
autoconnect-priority=-999
interface-name=eth0
timestamp=1717000000

[ethernet]

[ipv4]
address1=192.168.77.10/24,192.168.77.1
dns=192.168.77.1;
method=manual

[ipv6]
addr-gen-mode=eui64
method=auto

[proxy]
"""


def test_network_manager_keyfile_with_percent_and_empty_sections() -> None:
    (finding,) = problems("nm", NM_PROFILE)
    assert "connection 'Wired 100% eth0'" in finding.problem
    assert "ipv4.method manual" in finding.problem


def test_network_manager_keyfile_matched_by_mac_only() -> None:
    text = NM_PROFILE.replace("interface-name=eth0\n", "").replace(
        "[ethernet]\n", f"[ethernet]\nmac-address={MAC.upper()}\n"
    )
    (finding,) = problems("nm", text)
    assert "configures eth0 itself" in finding.problem


# ----------------------------------------------------------------------------- ifupdown

# Debian's installer output, with hotplug, a source line and an inline comment
IFUPDOWN = """\
# The loopback network interface
auto lo
iface lo inet loopback

source /etc/network/interfaces.d/*

# The primary network interface
allow-hotplug eth0
iface eth0 inet dhcp   # from the installer
\tdns-nameservers 192.168.77.1
"""


def test_ifupdown_installer_file() -> None:
    (finding,) = problems("ifupdown", IFUPDOWN)
    assert "configures eth0 itself (inet dhcp)" in finding.problem
    assert "iface cni0 inet dhcp\n    bridge_ports eth0" in finding.fix
