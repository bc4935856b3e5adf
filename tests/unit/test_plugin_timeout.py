"""The plugin waits for the agent at least as long as the agent may work (issue 12, item 8).

``ipam.timeout`` accepts up to 600 s, but the plugin used to give up after a fixed 120 s:
an ADD the agent was still allowed to finish answered "did not answer" while the pod got
its address a little later (and was then torn down by the runtime's DEL).
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from cni_bridge_dhcp.agent.config import IPAMConf
from cni_bridge_dhcp.cni import agent_client as client
from cni_bridge_dhcp.plugin.skel import main

ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc123",
    "CNI_NETNS": "/var/run/netns/test",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
}


def _max_ipam_timeout() -> float:
    for meta in IPAMConf.model_fields["timeout"].metadata:
        le = getattr(meta, "le", None)
        if le is not None:
            return float(le)
    raise AssertionError("ipam.timeout has no upper bound")


def _waits(conf: dict[str, Any], command: str = "ADD") -> float:
    seen: list[float] = []

    def call(socket_path: str, request: dict[str, Any], **kw: Any) -> dict[str, Any]:
        seen.append(kw.get("response_timeout", client.RESPONSE_TIMEOUT))
        return {"cniVersion": "1.0.0"}

    body = {"cniVersion": "1.0.0", "name": "lan", "type": "cni-bridge-dhcp", **conf}
    main({**ENV, "CNI_COMMAND": command}, json.dumps(body).encode(), io.StringIO(), call=call)
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("timeout", [30, 119.5, 300, 600])
def test_plugin_waits_past_the_configured_ipam_timeout(timeout: float) -> None:
    waited = _waits({"ipam": {"type": "dhcp", "timeout": timeout}})
    assert waited >= timeout + client.RESPONSE_MARGIN


def test_plugin_waits_past_the_largest_timeout_the_agent_accepts() -> None:
    largest = _max_ipam_timeout()
    waited = _waits({"ipam": {"type": "dhcp", "timeout": largest}})
    assert waited > largest + 30


def test_as_ipam_of_another_plugin_the_same_key_counts() -> None:
    conf = {"type": "macvlan", "ipam": {"type": "cni-bridge-dhcp", "timeout": 500}}
    assert _waits(conf) >= 500 + client.RESPONSE_MARGIN


@pytest.mark.parametrize("command", ["DEL", "CHECK"])
def test_every_command_gets_the_same_wait(command: str) -> None:
    conf = {"ipam": {"type": "dhcp", "timeout": 400}, "prevResult": {"cniVersion": "1.0.0"}}
    assert _waits(conf, command) >= 400 + client.RESPONSE_MARGIN


@pytest.mark.parametrize(
    "ipam",
    [None, {"type": "dhcp"}, {"type": "dhcp", "timeout": "600"}, {"type": "dhcp", "timeout": -1}],
)
def test_default_or_invalid_timeout_keeps_the_default_wait(ipam: dict[str, Any] | None) -> None:
    # An invalid value is the agent's to refuse (code 7 naming ipam.timeout); the plugin
    # only needs a sane wait for that answer.
    conf: dict[str, Any] = {} if ipam is None else {"ipam": ipam}
    assert _waits(conf) == client.RESPONSE_TIMEOUT
    assert client.RESPONSE_TIMEOUT >= 30 + client.RESPONSE_MARGIN  # the default ipam.timeout


def test_plugin_and_agent_agree_on_the_largest_timeout() -> None:
    assert _max_ipam_timeout() == client.MAX_IPAM_TIMEOUT
