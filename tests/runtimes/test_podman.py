"""podman with its CNI backend drives the plugin: leases, release, --mac-address, parallel
runs, and macvlan with our executable as IPAM."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

from testbed.sandbox import NODE_IP, ROUTER_IP, Sandbox, parse_dnsmasq_leases, run
from tests.e2e.helpers import agent_report, links
from tests.runtimes.images import BUSYBOX_REF
from tests.runtimes.podman import Podman

LAN_HOST = "192.168.77.50"
SHOW_ADDR = "ip -4 -o addr show eth0; cat /sys/class/net/eth0/address"


def leased(sb: Sandbox) -> dict[str, str]:
    """ip -> mac of the server's current leases."""
    return {lease["ip"]: lease["mac"] for lease in parse_dnsmasq_leases(sb.dnsmasq_leases_path)}


def address_of(output: str) -> str:
    found = re.findall(r"inet (192\.168\.77\.\d+)/24", output)
    assert len(found) == 1, output
    return found[0]


def add_lan_host(sb: Sandbox) -> None:
    host = sb.add_pod("lanhost")
    sb.attach_to_lan(host)
    run(["ip", "-n", host.name, "addr", "add", f"{LAN_HOST}/24", "dev", "eth0"])


def veths(sb: Sandbox) -> list[str]:
    return [name for name in links(sb.node) if name.startswith("veth")]


def test_run_rm_leases_reaches_the_lan_and_releases(node: Sandbox, podman: Podman) -> None:
    sb = node
    add_lan_host(sb)
    script = f"{SHOW_ADDR}; ping -c 1 -W 2 {ROUTER_IP} && ping -c 1 -W 2 {LAN_HOST}"
    script += f" && ping -c 1 -W 2 {NODE_IP} && ip route"
    out = podman("run", "--rm", "--network", "lan", BUSYBOX_REF, "sh", "-c", script).stdout
    address = address_of(out)
    assert f"default via {NODE_IP} dev eth0" in out, out
    # --rm: podman's cleanup ran DEL, which released the lease at the server
    assert address not in leased(sb)
    assert not veths(sb)
    assert agent_report(sb)["pods"] == []
    log = sb.agent_logs()
    assert re.search(rf"ADD \S+ pod=\S+ if=eth0 ok: {address}/24", log), log[-3000:]


def test_rm_f_releases_and_mac_address_is_honoured(node: Sandbox, podman: Podman) -> None:
    sb = node
    mac = "02:42:c0:a8:4d:0b"
    podman(
        "run", "-d", "--name", "web", "--network", "lan", "--mac-address", mac,
        BUSYBOX_REF, "sleep", "3600",
    )  # fmt: skip
    out = podman("exec", "web", "sh", "-c", SHOW_ADDR).stdout
    address = address_of(out)
    assert mac in out  # the pod's interface has the requested MAC...
    assert leased(sb).get(address) == mac  # ...and the server leased to that MAC
    assert len(veths(sb)) == 1

    podman("rm", "-f", "-t", "0", "web")
    assert address not in leased(sb), "podman rm -f must release the lease"
    assert not veths(sb)
    assert agent_report(sb)["pods"] == []


def test_six_parallel_runs_get_six_distinct_leases(node: Sandbox, podman: Podman) -> None:
    sb = node

    def one(i: int) -> str:
        name = f"par{i}"
        podman("run", "-d", "--name", name, "--network", "lan", BUSYBOX_REF, "sleep", "3600")
        return address_of(podman("exec", name, "sh", "-c", SHOW_ADDR).stdout)

    with ThreadPoolExecutor(max_workers=6) as pool:
        addresses = list(pool.map(one, range(6)))
    assert len(set(addresses)) == 6, addresses
    assert set(addresses) <= set(leased(sb))
    assert len(agent_report(sb)["pods"]) == 6
    podman("rm", "-a", "-f", "-t", "0")
    assert not set(addresses) & set(leased(sb))
    assert not veths(sb)


def test_macvlan_with_our_executable_as_ipam(node: Sandbox, podman: Podman) -> None:
    sb = node
    sb.write_conflist(
        "mvlan",
        {
            "cniVersion": "1.0.0",
            "plugins": [
                {
                    "type": "macvlan",
                    "master": "eth0",
                    "mode": "bridge",
                    "ipam": {"type": "cni-bridge-dhcp", "agentSocket": str(sb.agent_socket)},
                }
            ],
        },
    )
    add_lan_host(sb)
    podman("run", "-d", "--name", "mv", "--network", "mvlan", BUSYBOX_REF, "sleep", "3600")
    out = podman("exec", "mv", "sh", "-c", f"{SHOW_ADDR}; ip route").stdout
    address = address_of(out)
    assert f"default via {ROUTER_IP} dev eth0" in out, out
    assert leased(sb).get(address) is not None
    for target in (ROUTER_IP, LAN_HOST):
        ping = podman("exec", "mv", "ping", "-c", "1", "-W", "2", target, check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "cni0" not in links(sb.node)  # macvlan: no bridge, no uplink takeover
    podman("rm", "-f", "-t", "0", "mv")
    assert address not in leased(sb)
    assert agent_report(sb)["pods"] == []
