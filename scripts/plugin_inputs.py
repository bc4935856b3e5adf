"""The exec inputs the plugin timings use (scripts/plugin-timing.py, measure-native.py):
VERSION, and an ADD whose agent socket does not exist (the plugin's own work only)."""

from __future__ import annotations

import json

# What a node's runtime (kubelet/containerd) execs plugins with.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
VERSION_IN = b'{"cniVersion":"1.0.0"}'


def version_env(path: str = SYSTEM_PATH) -> dict[str, str]:
    return {"PATH": path, "CNI_COMMAND": "VERSION"}


def agent_down_add(tmp: str, path: str = SYSTEM_PATH) -> tuple[dict[str, str], bytes]:
    """(env, stdin) of an ADD to an agent socket under ``tmp`` that nobody listens on."""
    conf = {
        "cniVersion": "1.0.0",
        "name": "lan",
        "type": "cni-bridge-dhcp",
        "agentSocket": f"{tmp}/none.sock",
    }
    env = {
        "PATH": path,
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "timing",
        "CNI_NETNS": f"{tmp}/nonexistent",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
    }
    return env, json.dumps(conf).encode()
