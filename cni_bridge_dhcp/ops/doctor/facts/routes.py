"""Each ready pod's default route, read inside its namespace."""

from __future__ import annotations

import os
from typing import Any

from .. import checks as dc
from .common import json_list, run
from .context import Context, label


def _expected_gateway(att: dict[str, Any]) -> str | None:
    cni = (att.get("result") or {}).get("cni") or {}
    for route in cni.get("routes") or []:
        if isinstance(route, dict) and route.get("dst") == "0.0.0.0/0" and route.get("gw"):
            return str(route["gw"])
    return None


def _pod_routes(att: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, str]:
    path = str(att["netns"])
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return None, f"{path}: {exc.strerror}"
    try:
        if os.fstat(fd).st_ino != int(att.get("netns_inode", 0)):
            return None, f"{path} is another namespace now"
        out = run(
            [
                "nsenter",
                f"--net=/proc/self/fd/{fd}",
                "ip",
                "-j",
                "-4",
                "route",
                "show",
                "table",
                "main",
            ],
            pass_fds=[fd],
        )
    finally:
        os.close(fd)
    if out is None:
        return None, "nsenter/ip failed"
    return json_list(out), ""


def pod_route_check(ctx: Context) -> list[dc.Finding]:
    known: set[str] | None = None
    if ctx.report is not None:
        known = {str(p.get("key")) for p in ctx.report.get("pods", [])}
    facts: list[dc.PodRouteFacts] = []
    for att in ctx.attachments:
        key = f"{att['network']}/{att['container_id']}/{att['ifname']}"
        if known is not None and key not in known:
            continue
        if att.get("state") != "ready" or (att.get("result") or {}).get("role") == "ipam":
            continue
        gw = _expected_gateway(att)
        if gw is None:
            continue
        routes, error = _pod_routes(att)
        facts.append(
            dc.PodRouteFacts(label(att), str(att["netns"]), str(att["ifname"]), gw, routes, error)
        )
    return dc.check_pod_routes(facts)
