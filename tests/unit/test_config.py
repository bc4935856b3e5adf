"""Network config validation: reference bridge keys, our keys, and the codes for mistakes."""

from __future__ import annotations

from typing import Any

import pytest

from cni_bridge_dhcp.agent.config import NOT_IMPLEMENTED, check_args, choose_mac, parse_netconf
from cni_bridge_dhcp.agent.dhcp.identity import dns_label, option_code
from cni_bridge_dhcp.cni.errors import CNIError


def netconf(**extra: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "lan", "type": "cni-bridge-dhcp", **extra}


def test_reference_defaults() -> None:
    c = parse_netconf(netconf())
    assert c.bridge == "cni0" and c.mtu is None and not c.ip_masq and not c.hairpin_mode
    assert c.preserve_default_vlan and c.default_route == "node" and c.firewall_backend == "auto"
    assert c.uplink_interface is None and c.ipam is None


def test_reference_keys_are_accepted_with_their_meaning() -> None:
    c = parse_netconf(
        netconf(
            bridge="br-lan",
            ipMasq=True,
            mtu=9000,
            hairpinMode=True,
            macspoofchk=True,
            portIsolation=True,
            ipMasqBackend="nftables",
            dns={"nameservers": ["192.168.77.1"]},
            runtimeConfig={"mac": "0a:58:00:00:00:01"},
            args={"cni": {"mac": "0a:58:00:00:00:02"}},
            ipam={"type": "dhcp", "request": [{"option": "domain-search"}]},
            uplinkInterface="eth0",
            defaultRoute="dhcp",
            firewallBackend="nftables",
            unknownKeyFromAnotherTool=1,
        )
    )
    assert (c.bridge, c.ip_masq, c.mtu, c.hairpin_mode, c.macspoofchk) == (
        "br-lan",
        True,
        9000,
        True,
        True,
    )
    assert c.port_isolation and c.ip_masq_backend == "nftables"
    assert c.dns.nameservers == ["192.168.77.1"]
    assert c.runtime_config.mac == "0a:58:00:00:00:01" and c.args_mac == "0a:58:00:00:00:02"
    assert c.ipam is not None and c.ipam.is_ours and c.ipam.request[0].option == "domain-search"
    assert (c.uplink_interface, c.default_route, c.firewall_backend) == ("eth0", "dhcp", "nftables")


@pytest.mark.parametrize(
    ("extra", "code", "needle"),
    [
        ({"mtu": "big"}, 7, "mtu"),
        ({"mtu": 10}, 7, "mtu"),
        ({"ipMasq": "maybe"}, 7, "ipMasq"),
        ({"bridge": "x" * 16}, 7, "bridge"),
        ({"bridge": "a/b"}, 7, "bridge"),
        ({"defaultRoute": "router"}, 7, "defaultRoute"),
        ({"firewallBackend": "pf"}, 7, "firewallBackend"),
        ({"ipMasqBackend": "ebtables"}, 7, "ipMasqBackend"),
        ({"uplinkInterface": "eth[0"}, 7, "uplinkInterface"),
        ({"runtimeConfig": {"mac": "zz:zz"}}, 7, "runtimeConfig.mac"),
        ({"ipam": {"type": "dhcp", "timeout": -1}}, 7, "ipam.timeout"),
        ({"ipam": {"type": "dhcp", "provide": [{"option": "host-name"}]}}, 7, "ipam.provide"),
        ({"ipam": {"type": "dhcp", "serverAllowList": ["not-an-ip"]}}, 7, "ipam.serverAllowList"),
        ({"ipam": {"type": "dhcp", "arpProbeWait": -1}}, 7, "ipam.arpProbeWait"),
        ({"ipam": {"type": "dhcp", "arpProbeWait": "slow"}}, 7, "ipam.arpProbeWait"),
        ({"ipam": {"type": "dhcp", "routes": [{"dst": "10.0.0.0/33"}]}}, 7, "ipam.routes"),
        ({"hairpinMode": True, "promiscMode": True}, 7, "hairpinMode"),
        ({"vlan": 5000}, 7, "vlan"),
        ({"vlan": -1}, 7, "vlan"),
        (
            {"disableContainerInterface": True, "ipam": {"type": "dhcp"}},
            7,
            "disableContainerInterface",
        ),
        ({"vlanTrunk": [{"minID": 10}]}, 7, "vlanTrunk"),
        ({"vlanTrunk": [{"minID": 20, "maxID": 10}]}, 7, "vlanTrunk"),
        ({"vlanTrunk": [{"id": 5000}]}, 7, "vlanTrunk"),
    ],
)
def test_invalid_values_are_code_7_naming_the_key(
    extra: dict[str, Any], code: int, needle: str
) -> None:
    with pytest.raises(CNIError) as exc:
        parse_netconf(netconf(**extra))
    assert exc.value.code == code
    assert needle in exc.value.msg


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (k, v)
        for k, v in {
            "vlan": 10,
            "vlanTrunk": [{"id": 10}],
        }.items()
    ],
)
def test_unimplemented_keys_are_code_2_naming_the_key(key: str, value: Any) -> None:
    assert key in NOT_IMPLEMENTED
    with pytest.raises(CNIError) as exc:
        parse_netconf(netconf(**{key: value}))
    assert exc.value.code == 2 and key in exc.value.msg


def test_unimplemented_keys_at_their_default_are_fine() -> None:
    parse_netconf(netconf(**NOT_IMPLEMENTED))


def test_del_tolerates_unimplemented_keys() -> None:
    parse_netconf(netconf(vlan=10), check_unimplemented=False)


@pytest.mark.parametrize("key", ["isGateway", "isDefaultGateway"])
def test_gateway_keys_with_our_dhcp_ipam_are_code_7_naming_the_key(key: str) -> None:
    raw = netconf(**{key: True, "ipam": {"type": "dhcp"}})
    with pytest.raises(CNIError) as exc:
        parse_netconf(raw)
    assert exc.value.code == 7 and key in exc.value.msg and "LAN router" in exc.value.details
    # DEL of such a config still parses
    parse_netconf(raw, check_unimplemented=False)


@pytest.mark.parametrize("key", ["isGateway", "isDefaultGateway", "forceAddress", "enabledad"])
def test_reference_keys_with_delegated_ipam_are_accepted(key: str) -> None:
    conf = parse_netconf(netconf(**{key: True, "ipam": {"type": "host-local"}}))
    assert conf.model_dump(by_alias=True)[key] is True


def test_mac_precedence_runtime_config_then_args_then_cni_args() -> None:
    both = parse_netconf(
        netconf(
            runtimeConfig={"mac": "0a:00:00:00:00:01"}, args={"cni": {"mac": "0a:00:00:00:00:02"}}
        )
    )
    assert choose_mac(both, {"MAC": "0a:00:00:00:00:03"}) == "0a:00:00:00:00:01"
    args_only = parse_netconf(netconf(args={"cni": {"mac": "0A:00:00:00:00:02"}}))
    assert choose_mac(args_only, {"MAC": "0a:00:00:00:00:03"}) == "0a:00:00:00:00:02"
    assert choose_mac(parse_netconf(netconf()), {"MAC": "0a:00:00:00:00:03"}) == "0a:00:00:00:00:03"
    assert choose_mac(parse_netconf(netconf()), {}) is None


def test_multicast_or_malformed_mac_from_args_is_refused() -> None:
    with pytest.raises(CNIError) as exc:
        choose_mac(parse_netconf(netconf()), {"MAC": "01:00:5e:00:00:01"})
    assert exc.value.code == 7 and "multicast" in exc.value.msg
    with pytest.raises(CNIError):
        choose_mac(parse_netconf(netconf()), {"MAC": "nope"})


def test_unknown_cni_args_need_ignore_unknown() -> None:
    c = parse_netconf(
        netconf(ipam={"type": "dhcp", "provide": [{"option": "host-name", "fromArg": "MY_HOST"}]})
    )
    check_args(c, {"K8S_POD_NAME": "a", "MY_HOST": "h"})
    check_args(c, {"FOO": "1", "IgnoreUnknown": "1"})
    with pytest.raises(CNIError) as exc:
        check_args(c, {"FOO": "1"})
    assert exc.value.code == 2 and "FOO" in exc.value.msg


def test_dhcp_option_names_and_numbers() -> None:
    assert option_code("classless-static-routes", "k") == 121
    assert option_code("42", "k") == 42
    with pytest.raises(CNIError) as exc:
        option_code("no-such-option", "ipam.request")
    assert exc.value.code == 7 and "ipam.request" in exc.value.msg


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("web-0", "web-0"),
        ("My_Pod.Name", "my-pod-name"),
        ("-x-", "x"),
        ("", None),
        (None, None),
        ("a" * 80, "a" * 63),
    ],
)
def test_pod_names_become_dns_labels(name: str | None, label: str | None) -> None:
    assert dns_label(name) == label
