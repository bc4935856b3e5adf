"""Shared helpers for end-to-end tests: conflists and reading pod/node state."""

from __future__ import annotations

import json
import sys
from typing import Any

from testbed.sandbox import Pod, Sandbox, ping, run

__all__ = ["ping"]

NET = "lan"


def conflist(sb: Sandbox, version: str = "1.0.0", **plugin: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "type": "cni-bridge-dhcp",
        "bridge": "cni0",
        "uplinkInterface": "eth0",
        "agentSocket": str(sb.agent_socket),
        "ipam": {"type": "dhcp", "timeout": 20},
    }
    conf.update(plugin)
    return {"cniVersion": version, "name": NET, "plugins": [conf]}


def add(sb: Sandbox, pod: Pod, conf: dict[str, Any], **kw: Any) -> dict[str, Any]:
    proc = sb.cnitool("add", NET, pod, conflist=conf, **kw)
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def ip_json(args: list[str], netns: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(run(["ip", "-j", *args], netns=netns).stdout or "[]")
    return out


def pod_routes(pod: Pod) -> list[str]:
    """`ip route` lines of the pod, without the `proto static` that pyroute2 adds."""
    lines = run(["ip", "route"], netns=pod.name).stdout.splitlines()
    return [line.replace(" proto static", "").strip() for line in lines]


def links(netns: str) -> list[str]:
    return [link["ifname"] for link in ip_json(["link"], netns)]


def container_id(pod: Pod) -> str:
    """The container id tests/cnitool derives from a netns path."""
    import hashlib

    return "cnitool-" + hashlib.sha512(pod.path.encode()).hexdigest()[:20]


def agent_report(sb: Sandbox) -> dict[str, Any]:
    proc = run(
        [
            sys.executable,
            "-m",
            "cni_bridge_dhcp",
            "status",
            "--json",
            "--socket",
            str(sb.agent_socket),
        ],
        netns=sb.node,
    )
    out: dict[str, Any] = json.loads(proc.stdout)
    return out
