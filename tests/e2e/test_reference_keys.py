"""Reference bridge keys through the real CNI client: applied, or refused naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.sandbox import Sandbox
from tests.e2e.helpers import NET, add, conflist, ip_json, links, ping, pod_routes

pytestmark = [pytest.mark.netns, pytest.mark.e2e]


def host_veth(sb: Sandbox) -> dict[str, object]:
    name = next(n for n in links(sb.node) if n.startswith("veth"))
    return ip_json(["-d", "link", "show", name], sb.node)[0]


def test_mtu_hairpin_and_port_isolation_are_applied(lan: Sandbox) -> None:
    sb = lan
    pod = sb.add_pod("keys")
    add(sb, pod, conflist(sb, mtu=1400, hairpinMode=True, portIsolation=True))
    assert ip_json(["link", "show", "eth0"], pod.name)[0]["mtu"] == 1400
    veth = host_veth(sb)
    assert veth["mtu"] == 1400
    port = veth["linkinfo"]["info_slave_data"]  # type: ignore[index]
    assert port["hairpin"] is True and port["isolated"] is True


def test_promisc_mode_puts_the_bridge_in_promiscuous_mode(lan: Sandbox) -> None:
    sb = lan
    add(sb, sb.add_pod("promisc"), conflist(sb, promiscMode=True))
    assert ip_json(["-d", "link", "show", "cni0"], sb.node)[0]["promiscuity"] >= 1


@pytest.mark.parametrize("source", ["runtimeConfig", "args", "CNI_ARGS"])
def test_mac_sources(lan: Sandbox, source: str) -> None:
    sb = lan
    mac = "0a:58:c0:a8:4d:42"
    pod = sb.add_pod("mac")
    if source == "runtimeConfig":
        conf = conflist(sb, capabilities={"mac": True})
        result = add(sb, pod, conf, cap_args={"mac": mac})
    elif source == "args":
        result = add(sb, pod, conflist(sb, args={"cni": {"mac": mac}}))
    else:
        result = add(sb, pod, conflist(sb), cni_args=f"IgnoreUnknown=1;MAC={mac}")
    assert ip_json(["link", "show", "eth0"], pod.name)[0]["address"] == mac
    assert any(i.get("mac") == mac and i.get("sandbox") for i in result["interfaces"])


def test_configured_dns_replaces_dhcp_dns_in_the_result(lan: Sandbox) -> None:
    sb = lan
    dns = {"nameservers": ["192.168.77.53"], "search": ["corp.test"]}
    result = add(sb, sb.add_pod("dns"), conflist(sb, dns=dns))
    assert result["dns"] == dns


def test_disable_container_interface_leaves_it_down(lan: Sandbox) -> None:
    sb = lan
    pod = sb.add_pod("down")
    conf = conflist(sb, disableContainerInterface=True)
    del conf["plugins"][0]["ipam"]
    add(sb, pod, conf)
    assert "UP" not in ip_json(["link", "show", "eth0"], pod.name)[0]["flags"]


@pytest.mark.parametrize(("key", "value"), [("vlan", 10), ("vlanTrunk", [{"id": 10}])])
def test_unimplemented_keys_are_refused_with_code_2(lan: Sandbox, key: str, value: object) -> None:
    sb = lan
    pod = sb.add_pod("unimpl")
    proc = sb.cnitool("add", NET, pod, conflist=conflist(sb, **{key: value}), check=False)
    err = json.loads(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode != 0 and err["code"] == 2 and key in err["msg"]
    assert links(pod.name) == ["lo"]


@pytest.mark.parametrize("key", ["isGateway", "isDefaultGateway"])
def test_gateway_keys_with_dhcp_ipam_are_refused_with_code_7(lan: Sandbox, key: str) -> None:
    sb = lan
    pod = sb.add_pod("gwdhcp")
    proc = sb.cnitool("add", NET, pod, conflist=conflist(sb, **{key: True}), check=False)
    err = json.loads(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode != 0 and err["code"] == 7 and key in err["msg"]
    assert "LAN router" in err["details"]
    assert links(pod.name) == ["lo"]


def test_is_gateway_with_host_local_makes_the_bridge_the_pods_node_gateway(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """No uplink: defaultRoute "node" uses the gateway isGateway put on the bridge."""
    sb = sandbox
    sb.start_agent()
    ipam = {
        "type": "host-local",
        "dataDir": str(tmp_path / "host-local"),
        "ranges": [[{"subnet": "10.24.0.0/24"}]],
    }
    conf = conflist(sb, bridge="cbr2", isGateway=True, defaultRoute="node", ipam=ipam)
    del conf["plugins"][0]["uplinkInterface"]
    pod = sb.add_pod("gw")
    result = add(sb, pod, conf)
    assert result["ips"][0] == {"address": "10.24.0.2/24", "interface": 2, "gateway": "10.24.0.1"}
    addrs = ip_json(["addr", "show", "dev", "cbr2"], sb.node)[0]["addr_info"]
    assert "10.24.0.1" in [a["local"] for a in addrs]
    assert "default via 10.24.0.1 dev eth0" in pod_routes(pod)
    assert ping(pod.name, "10.24.0.1")
    sb.cnitool("del", NET, pod, conflist=conf)


def test_delegated_ipam_host_local_is_executed_and_released(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sb = sandbox
    sb.start_agent()
    data_dir = tmp_path / "host-local"
    ipam = {
        "type": "host-local",
        "dataDir": str(data_dir),
        "ranges": [[{"subnet": "10.22.0.0/24", "gateway": "10.22.0.1"}]],
    }
    conf = conflist(sb, bridge="cbr1", defaultRoute="dhcp", ipam=ipam)
    del conf["plugins"][0]["uplinkInterface"]
    pod = sb.add_pod("hl")
    result = add(sb, pod, conf)
    assert result["ips"][0]["address"] == "10.22.0.2/24"
    assert "default via 10.22.0.1 dev eth0" in pod_routes(pod)
    assert (data_dir / NET / "10.22.0.2").exists()
    sb.cnitool("del", NET, pod, conflist=conf)
    assert not (data_dir / NET / "10.22.0.2").exists()
