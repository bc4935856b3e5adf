"""A second config naming the node's bridge never rewrites the bridge (issue 12, item 4).

The first conflist takes the node's uplink over into ``cni0`` (which then carries the
node's IPv4 and IPv6 addresses); a second conflist names the same bridge without
``uplinkInterface`` and asks for other settings. Its ``mtu`` is the pod veth's only, its
``promiscMode`` is not applied to a bridge it did not make, and a veth MTU above the
bridge's is refused with code 7 naming ``mtu``.
"""

from __future__ import annotations

import json
from typing import Any

from testbed.sandbox import NODE_IP, Pod, Sandbox, run
from tests.e2e.helpers import add, conflist, ip_json

NODE_V6 = "fd00:77::2"


def _second(sb: Sandbox, **plugin: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "type": "cni-bridge-dhcp",
        "bridge": "cni0",
        "agentSocket": str(sb.agent_socket),
        "ipam": {"type": "dhcp", "timeout": 20},
        **plugin,
    }
    return {"cniVersion": "1.0.0", "name": "second", "plugins": [conf]}


def _bridge(sb: Sandbox) -> tuple[int, bool, set[str]]:
    link = ip_json(["-d", "link", "show", "cni0"], sb.node)[0]
    promisc = int(link.get("promiscuity", 0)) > 0 or "PROMISC" in link["flags"]
    addrs = ip_json(["-6", "addr", "show", "dev", "cni0"], sb.node)[0].get("addr_info", [])
    return int(link["mtu"]), promisc, {f"{a['local']}/{a['prefixlen']}" for a in addrs}


def _pod_mtu(pod: Pod) -> int:
    return int(ip_json(["link", "show", "eth0"], pod.name)[0]["mtu"])


def test_second_config_sharing_the_node_bridge_leaves_it_alone(sandbox: Sandbox) -> None:
    sb = sandbox
    run(["ip", "-6", "addr", "add", f"{NODE_V6}/64", "dev", "eth0", "nodad"], netns=sb.node)
    sb.start_dnsmasq()
    sb.start_agent()
    first = sb.add_pod("first")
    add(sb, first, conflist(sb))
    before = _bridge(sb)
    assert before[0] == 1500 and not before[1]
    assert f"{NODE_V6}/64" in before[2] and any(a.startswith("fe80:") for a in before[2])

    for n, mtu in enumerate((1280, 576)):
        pod = sb.add_pod(f"mtu{mtu}")
        conf = _second(sb, mtu=mtu, promiscMode=True)
        sb.cnitool("add", "second", pod, conflist=conf)
        assert _bridge(sb) == before, f"ADD #{n + 1} (mtu {mtu}) changed the node's bridge"
        assert _pod_mtu(pod) == mtu
        # the pod still reaches the node through the bridge
        size = str(mtu - 28)  # a full-size packet of the pod's MTU crosses the bridge
        run(["busybox", "ping", "-c1", "-W2", "-s", size, NODE_IP], netns=pod.name)

    big = sb.add_pod("big")
    proc = sb.cnitool("add", "second", big, conflist=_second(sb, mtu=9000), check=False)
    assert proc.returncode != 0
    err = json.loads(proc.stdout or proc.stderr)
    assert err["code"] == 7 and "mtu" in err["msg"] and "9000" in err["msg"], err
    assert "1500" in err["msg"] + err.get("details", "")
    assert not [i for i in ip_json(["link"], big.name) if i["ifname"] != "lo"]
    assert _bridge(sb) == before
    # the node's own IPv6 still works after all of this
    run(["ip", "-6", "addr", "add", "fd00:77::1/64", "dev", "lan0", "nodad"], netns=sb.lan)
    run(["busybox", "ping", "-c1", "-W2", "fd00:77::1"], netns=sb.node)
