"""Operator subcommands: `status` (asks the agent) and `uplink restore` (acts locally)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .client import DEFAULT_SOCKET, call
from .errors import CNIError
from .protocol import make_request

DEFAULT_STATE_DIR = "/var/lib/cni-bridge-dhcp"


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
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def admin_main(command: str, argv: list[str]) -> int:
    if command == "status":
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
    p = argparse.ArgumentParser(prog="cni-bridge-dhcp uplink")
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("restore", help="undo the uplink takeover")
    r.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    r.add_argument("--socket", default=DEFAULT_SOCKET)
    r.add_argument("--force", action="store_true", help="restore even if pods remain")
    args = p.parse_args(argv)
    from .agent.attachments import AttachmentStore
    from .agent.uplink import restore

    state_dir = Path(args.state_dir)
    pods = AttachmentStore(state_dir).all()
    try:
        state = restore(state_dir, pods_present=bool(pods), force=args.force)
    except CNIError as err:
        sys.stderr.write(f"cni-bridge-dhcp uplink restore: {err.msg}\n")
        if err.details:
            sys.stderr.write(f"{err.details}\n")
        return 1
    if state is None:
        print("nothing to restore: no uplink takeover is recorded")
    else:
        print(
            f"restored {state.uplink}: addresses, routes and MAC are back; {state.bridge} released"
        )
    return 0
