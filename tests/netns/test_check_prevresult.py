"""CHECK with a malformed prevResult: code 7 naming the field, never 999 or a traceback.

The plugin is run as the runtime runs it (env + stdin) against a live agent and a pod that
a real ADD made, so the prevResult is the only thing wrong in each request.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from testbed.sandbox import REPO_ROOT, Pod, Sandbox, run
from tests.e2e.helpers import NET, add, conflist, container_id

GOOD_IF = {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/x"}

# (prevResult, text the error message must contain)
CASES: list[tuple[object, str]] = [
    ([], "prevResult"),
    ({"interfaces": "eth0"}, "prevResult.interfaces"),
    ({"interfaces": [42]}, "prevResult.interfaces[0]"),
    ({"interfaces": [{"name": 5}]}, "prevResult.interfaces[0].name"),
    ({"interfaces": [{"name": "eth0", "mac": 7, "sandbox": "/x"}]}, "prevResult.interfaces[0].mac"),
    ({"ips": "192.168.77.5/24"}, "prevResult.ips"),
    ({"ips": ["192.168.77.5/24"]}, "prevResult.ips[0]"),
    ({"ips": [{"address": "not-an-address"}]}, "prevResult.ips[0].address"),
    ({"ips": [{"address": 3232238853}]}, "prevResult.ips[0].address"),
    ({"ips": [{"address": "192.168.77.5/24", "gateway": "x"}]}, "prevResult.ips[0].gateway"),
    (
        {"interfaces": [GOOD_IF], "ips": [{"address": "192.168.77.5/24", "interface": 3}]},
        "prevResult.ips[0].interface",
    ),
    ({"ips": [{"address": "192.168.77.5/24", "interface": "0"}]}, "prevResult.ips[0].interface"),
    ({"routes": {"dst": "0.0.0.0/0"}}, "prevResult.routes"),
    ({"routes": [{"gw": "192.168.77.1"}]}, "prevResult.routes[0].dst"),
    ({"routes": [{"dst": "10.0.0.0/33"}]}, "prevResult.routes[0].dst"),
    ({"routes": [{"dst": "0.0.0.0/0", "gw": ["192.168.77.1"]}]}, "prevResult.routes[0].gw"),
]


def _check(sb: Sandbox, pod: Pod, prev: object) -> dict[str, Any]:
    conf = {
        "cniVersion": "1.0.0",
        "name": NET,
        "type": "cni-bridge-dhcp",
        "bridge": "cni0",
        "uplinkInterface": "eth0",
        "agentSocket": str(sb.agent_socket),
        "ipam": {"type": "dhcp", "timeout": 20},
        "prevResult": prev,
    }
    env = {
        "CNI_COMMAND": "CHECK",
        "CNI_CONTAINERID": container_id(pod),
        "CNI_NETNS": pod.path,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/usr/lib/cni",
        "PYTHONPATH": str(REPO_ROOT),
    }
    proc = run(
        [sys.executable, "-m", "cni_bridge_dhcp"],
        netns=sb.node,
        env=env,
        input=json.dumps(conf),
        check=False,
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout or "{}")
    return out


@pytest.fixture
def pod_added(sandbox: Sandbox) -> tuple[Sandbox, Pod]:
    sandbox.start_dnsmasq()
    sandbox.start_agent()
    pod = sandbox.add_pod("chk")
    add(sandbox, pod, conflist(sandbox))
    return sandbox, pod


def test_malformed_prev_results_are_code_7_naming_the_field(
    pod_added: tuple[Sandbox, Pod],
) -> None:
    sb, pod = pod_added
    failures = []
    for prev, field in CASES:
        out = _check(sb, pod, prev)
        text = f"{out.get('msg', '')} {out.get('details', '')}"
        if out.get("code") != 7 or field not in text or "Traceback" in text:
            failures.append(f"{json.dumps(prev)}: {out}")
    assert not failures, "\n".join(failures)
    assert "internal error" not in sb.agent_logs()
