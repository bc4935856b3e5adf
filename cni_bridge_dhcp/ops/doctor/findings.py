"""Findings: what each check reports, their order, and how they are shown."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Check names, in the order they are reported.
AGENT = "agent"
CNI_CONFIG = "cni-config"
UPLINK = "uplink"
FORWARD = "forward-policy"
BR_NETFILTER = "br-netfilter"
BACKEND = "iptables-backend"
POD_ROUTES = "pod-routes"
NET_MANAGER = "network-manager"
NODE_LEASE = "node-lease"
DHCP_SERVER = "dhcp-server"
STATE = "state"
SERVER_LEASES = "server-leases"
ORDER = (
    AGENT,
    CNI_CONFIG,
    UPLINK,
    FORWARD,
    BR_NETFILTER,
    BACKEND,
    POD_ROUTES,
    NET_MANAGER,
    NODE_LEASE,
    DHCP_SERVER,
    STATE,
    SERVER_LEASES,
)


@dataclass
class Finding:
    check: str
    ok: bool
    problem: str = ""
    fix: str = ""
    detail: str = ""  # what a passing (or skipped) check looked at

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "ok": self.ok,
            "problem": self.problem,
            "fix": self.fix,
            "detail": self.detail,
        }


def ok(check: str, detail: str) -> Finding:
    return Finding(check, True, detail=detail)


def bad(check: str, problem: str, fix: str) -> Finding:
    return Finding(check, False, problem=problem, fix=fix)


def exit_code(findings: Sequence[Finding]) -> int:
    return 0 if all(f.ok for f in findings) else 1


def render_text(findings: Sequence[Finding]) -> str:
    lines: list[str] = []
    for f in sorted(findings, key=lambda f: ORDER.index(f.check) if f.check in ORDER else 99):
        if f.ok:
            lines.append(f"ok    {f.check}: {f.detail}")
        else:
            lines.append(f"FAIL  {f.check}: {f.problem}")
            for n, fix_line in enumerate(f.fix.splitlines()):
                lines.append(("      fix: " if n == 0 else "           ") + fix_line)
    bad_count = sum(1 for f in findings if not f.ok)
    lines.append(f"{bad_count} problem(s) found" if bad_count else "no problems found")
    return "\n".join(lines)


def render_json(findings: Sequence[Finding]) -> str:
    return json.dumps(
        {"ok": all(f.ok for f in findings), "checks": [f.to_json() for f in findings]},
        indent=2,
    )
