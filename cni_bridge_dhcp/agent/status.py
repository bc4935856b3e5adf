"""The agent's REPORT answer (``cni-bridge-dhcp status``): uplink, firewalls, pods, leases."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from .dhcp import LeaseManager
from .firewall.registry import FirewallRegistry
from .state.attachments import AttachmentStore
from .uplink import current_state


async def report(
    state_dir: Path,
    store: AttachmentStore,
    leases: LeaseManager | None,
    firewall: FirewallRegistry,
) -> dict[str, Any]:
    uplink = await asyncio.to_thread(current_state, state_dir)
    pods = []
    for att in store.all():
        lease = leases.get(att.key) if leases is not None else None
        pods.append(
            {
                "key": att.key,
                "state": str(att.state),
                "podNamespace": att.pod_namespace,
                "podName": att.pod_name,
                "containerId": att.container_id,
                "ifname": att.ifname,
                "hostVeth": att.host_veth,
                "bridge": att.bridge,
                "mac": att.mac,
                "ips": att.ips,
                "lease": None
                if lease is None
                else {
                    "state": lease.state,
                    "address": str(lease.address),
                    "server": str(lease.server_id),
                    "expiresAt": lease.expires_at,
                    "renewAt": lease.renew_at,
                },
            }
        )
    return {
        "uplink": None
        if uplink is None
        else {
            "bridge": uplink.bridge,
            "uplink": uplink.uplink,
            "mac": uplink.mac,
            "nodeIPv4": str(uplink.node_ipv4) if uplink.node_ipv4 else None,
            "gateway4": str(uplink.gateway4) if uplink.gateway4 else None,
            "preconfigured": uplink.preconfigured,
        },
        "firewall": firewall.backends(),
        "pods": pods,
    }
