"""ipam.ipv6 (SLAAC): config values, the pod's IPv6 knobs per mode and defaultRoute."""

from __future__ import annotations

from typing import Any

import pytest

from cni_bridge_dhcp.agent.commands.slaac_step import slaac_sysctls
from cni_bridge_dhcp.agent.config import parse_netconf
from cni_bridge_dhcp.agent.datapath.slaac import RA_WAIT, RFC4861_RS_ANSWER, pod_ipv6_sysctls
from cni_bridge_dhcp.cni.errors import CNIError, ErrorCode


def netconf(ipam: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    conf = {"cniVersion": "1.0.0", "name": "lan", "type": "cni-bridge-dhcp", **extra}
    if ipam is not None:
        conf["ipam"] = ipam
    return conf


def test_ipv6_defaults_to_auto() -> None:
    conf = parse_netconf(netconf({"type": "dhcp"}))
    assert conf.ipam is not None and conf.ipam.ipv6 == "auto"


@pytest.mark.parametrize("value", ["on", "", 1, True, None, "AUTO"])
def test_bad_ipv6_values_are_code_7_naming_the_key(value: object) -> None:
    with pytest.raises(CNIError) as exc:
        parse_netconf(netconf({"type": "dhcp", "ipv6": value}))
    assert exc.value.code == ErrorCode.INVALID_CONFIG
    assert "ipam.ipv6" in exc.value.msg


def test_off_disables_ipv6_on_the_pod_interface() -> None:
    conf = parse_netconf(netconf({"type": "dhcp", "ipv6": "off"}))
    assert slaac_sysctls(conf) == (("disable_ipv6", "1"),)


def test_node_mode_refuses_the_ra_default_route_but_keeps_the_prefix() -> None:
    knobs = dict(pod_ipv6_sysctls("auto", "node"))
    assert knobs["accept_ra_defrtr"] == "0"
    assert "accept_ra_pinfo" not in knobs and "autoconf" not in knobs


def test_dhcp_mode_keeps_the_routers_default_route() -> None:
    assert "accept_ra_defrtr" not in dict(pod_ipv6_sysctls("auto", "dhcp"))


def test_the_pod_solicits_at_once_and_soon_again() -> None:
    # ADD waits seconds, not RFC 4861's 4 s retransmission, for a lost first solicitation.
    for mode in ("node", "dhcp", "none"):
        knobs = dict(pod_ipv6_sysctls("auto", mode))
        assert knobs["router_solicitation_delay"] == "0"
        assert int(knobs["router_solicitation_interval"]) < RFC4861_RS_ANSWER


def test_delegated_ipam_and_no_ipam_leave_ipv6_alone() -> None:
    assert slaac_sysctls(parse_netconf(netconf(None))) == ()
    assert (
        slaac_sysctls(parse_netconf(netconf({"type": "host-local", "subnet": "10.9.0.0/24"}))) == ()
    )


def test_the_ra_wait_is_short_where_the_node_cannot_tell() -> None:
    # What an IPv4-only LAN whose node ignores RAs costs at most (README): keep it small.
    assert 0 < RA_WAIT <= 1.0 < RFC4861_RS_ANSWER


def test_a_lan_the_node_saw_no_ras_on_waits_less() -> None:
    from cni_bridge_dhcp.agent.datapath.slaac import QUIET_LAN_WAIT

    assert 0 < QUIET_LAN_WAIT < RA_WAIT
