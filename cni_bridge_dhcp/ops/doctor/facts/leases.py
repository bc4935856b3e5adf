"""The DHCP server's lease file and the pods' held leases."""

from __future__ import annotations

import contextlib
import json
import time

from dhcp_leases import DhcpLeases

from ....agent.dhcp.lease import LeaseState
from ....cni.defaults import LEASES_DIR
from .. import checks as dc
from .common import read_text
from .context import Context

# lease states in which a pod uses its address
HELD_STATES = (LeaseState.BOUND, LeaseState.RENEWING, LeaseState.REBINDING)


def read_server_leases(path: str) -> dict[str, dc.ServerLease]:
    leases = []
    # include_backups: entries without a hardware address (abandoned, some frees) supersede
    # earlier ones for the same address too
    for lease in DhcpLeases(path).get(include_backups=True):
        uid = lease.data.get("uid")
        leases.append(
            dc.ServerLease(
                ip=str(lease.ip),
                mac=str(lease.ethernet or ""),
                state=str(lease.binding_state),
                ends=lease.end.timestamp() if lease.end is not None else None,
                uid=dc.decode_dhcpd_uid(uid) if isinstance(uid, str) else None,
                hostname=str(lease.hostname or ""),
            )
        )
    return dc.last_per_address(leases)


def server_leases_check(ctx: Context) -> list[dc.Finding]:
    path = ctx.args.server_leases
    if path is None:
        return dc.check_server_leases(None, None, [], time.time(), ctx.args.shared_lan)
    try:
        server: dict[str, dc.ServerLease] | None = read_server_leases(path)
        error = ""
    except (OSError, ValueError, KeyError) as exc:
        server, error = None, str(exc)
    client_ids: dict[str, bytes] = {}
    for rec_path in (ctx.state_dir / LEASES_DIR).glob("*.json"):
        text = read_text(rec_path)
        with contextlib.suppress(ValueError, TypeError):
            data = json.loads(text or "")
            client_ids[str(data["key"])] = bytes.fromhex(str(data.get("client_id", "")))
    pods = []
    for pod in (ctx.report or {}).get("pods", []):
        lease = pod.get("lease")
        if not lease or str(lease.get("state", "")).upper() not in HELD_STATES:
            continue
        label = (
            f"pod {pod['podNamespace']}/{pod['podName']}"
            if pod.get("podName")
            else f"container {str(pod.get('containerId'))[:12]}"
        )
        pods.append(
            dc.PodLease(
                label,
                str(lease["address"]).split("/")[0],
                str(pod.get("mac", "")),
                client_ids.get(str(pod.get("key"))),
            )
        )
    return dc.check_server_leases(path, server, pods, time.time(), ctx.args.shared_lan, error)
