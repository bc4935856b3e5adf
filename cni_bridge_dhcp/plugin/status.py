"""`cni-bridge-dhcp status`: asks the agent over its socket (stdlib only, ships in the zipapp)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..cni.agent_client import call
from ..cni.defaults import DEFAULT_SOCKET
from ..cni.errors import CNIError
from ..cni.wire import make_request


def _ask(socket_path: str, op: str) -> dict[str, Any]:
    return call(socket_path, make_request(op, "1.1.0", {}, {}, False), response_timeout=30)


def _fmt_time(deadline: float | None) -> str:
    if not deadline:
        return "-"
    left = deadline - time.time()
    return f"{time.strftime('%H:%M:%S', time.localtime(deadline))} ({left:+.0f}s)"


def render_status(report: dict[str, Any]) -> str:
    lines: list[str] = []
    up = report.get("uplink")
    if up:
        lines.append(
            f"uplink {up['uplink']} enslaved to {up['bridge']} (MAC {up['mac']}, node {up['nodeIPv4']}, "
            f"gateway {up['gateway4']}{', preconfigured' if up['preconfigured'] else ''})"
        )
    else:
        lines.append("uplink: not taken over")
    fws = report.get("firewall") or {}
    lines.append(
        "firewall: "
        + (", ".join(f"{k} -> {'+'.join(v) or 'none'}" for k, v in fws.items()) or "not used yet")
    )
    header = ("POD", "CONTAINER", "IF", "MAC", "ADDRESS", "LEASE", "EXPIRES", "SERVER")
    rows = [header]
    for pod in report.get("pods", []):
        lease = pod.get("lease") or {}
        name = f"{pod['podNamespace']}/{pod['podName']}" if pod.get("podName") else "-"
        rows.append(
            (
                name,
                pod["containerId"][:12],
                pod["ifname"],
                pod["mac"],
                ",".join(pod["ips"]) or "-",
                lease.get("state", pod["state"]),
                _fmt_time(lease.get("expiresAt")),
                lease.get("server", "-"),
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    for row in rows:
        # Every row has len(header) cells; zip(strict=) would need python3 3.10 on the node.
        cells = (str(c).ljust(widths[i]) for i, c in enumerate(row))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def status_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cni-bridge-dhcp status")
    p.add_argument("--socket", default=DEFAULT_SOCKET)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        report = _ask(args.socket, "REPORT")
    except CNIError as err:
        sys.stderr.write(f"cni-bridge-dhcp status: {err.msg}\n{err.details}\n")
        return 1
    sys.stdout.write(json.dumps(report, indent=2) if args.json else render_status(report))
    sys.stdout.write("\n")
    return 0
