"""Which firewall backend(s) hold the host's FORWARD policy and rules.

The order of evidence follows kube-proxy's iptables-wrappers: kubelet's
``KUBE-IPTABLES-HINT``/``KUBE-KUBELET-CANARY`` chains in a ``mangle`` table name the
backend Kubernetes uses; otherwise a backend with rules or a non-accept forward policy is
in use; otherwise nftables. Because legacy xtables and nftables are *both* evaluated (a
drop in either wins), every other backend that is in use gets our rules too.

Reading the legacy side never creates a table: ``/proc/net/ip*_tables_names`` first, then
``ip(6)tables-legacy-save`` without ``-t`` (which lists only existing tables). Our own
chains and rules are not counted, so a restart does not read our rules as the host's.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from .model import CHAIN_PREFIX, OWN_TABLE, is_ours
from .rules import parse_iptables_line

log = logging.getLogger(__name__)

HINT_CHAINS = ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")
CHOICES = ("auto", "iptables", "nftables", "none")


@dataclass
class Usage:
    """What one backend holds, our own rules excluded."""

    hints: list[str] = field(default_factory=list)
    rules: int = 0
    forward_policies: list[str] = field(default_factory=list)  # non-accept ones, described
    note: str = ""

    @property
    def in_use(self) -> bool:
        return bool(self.hints or self.rules or self.forward_policies or self.note)

    def describe(self) -> str:
        parts = []
        if self.hints:
            parts.append("kubelet chains " + ", ".join(self.hints))
        if self.rules:
            parts.append(f"{self.rules} rules")
        parts += self.forward_policies
        if self.note:
            parts.append(self.note)
        return "; ".join(parts) or "no rules, forward policy accept"


def legacy_usage_from_save(texts: dict[int, str]) -> Usage:
    """Usage from ``iptables-legacy-save`` (family 4) / ``ip6tables-legacy-save`` (6) output."""
    usage = Usage()
    for family, text in sorted(texts.items()):
        label = "iptables-legacy" if family == 4 else "ip6tables-legacy"
        table = ""
        for line in text.splitlines():
            if line.startswith("*"):
                table = line[1:].strip()
            elif line.startswith(":"):
                name, _, rest = line[1:].partition(" ")
                policy = rest.split(" ", 1)[0]
                if table == "mangle" and name in HINT_CHAINS:
                    usage.hints.append(f"{label} mangle {name}")
                if table == "filter" and name == "FORWARD" and policy not in ("ACCEPT", "-"):
                    usage.forward_policies.append(f"{label} FORWARD policy {policy}")
            else:
                parsed = parse_iptables_line(line)
                if parsed is None:
                    continue
                chain, rule = parsed
                if chain.startswith(CHAIN_PREFIX) or is_ours(rule.comment):
                    continue
                usage.rules += 1
    return usage


def _our_nft_rule(rule: dict[str, Any]) -> bool:
    if is_ours(rule.get("comment")) or str(rule.get("chain", "")).startswith(CHAIN_PREFIX):
        return True
    for expr in rule.get("expr", []):
        jump = expr.get("jump") if isinstance(expr, dict) else None
        if isinstance(jump, dict) and str(jump.get("target", "")).startswith(CHAIN_PREFIX):
            return True
    return False


def nft_usage_from_ruleset(items: list[dict[str, Any]]) -> Usage:
    """Usage from ``nft -j list ruleset`` items (iptables-nft tables included)."""
    usage = Usage()
    for item in items:
        chain = item.get("chain")
        if isinstance(chain, dict) and chain.get("table") != OWN_TABLE:
            where = f"{chain.get('family')} {chain.get('table')} {chain.get('name')}"
            if chain.get("table") == "mangle" and chain.get("name") in HINT_CHAINS:
                usage.hints.append(f"nft {where}")
            if chain.get("hook") == "forward" and chain.get("policy") not in (None, "accept"):
                usage.forward_policies.append(f"nft {where} policy {chain.get('policy')}")
        rule = item.get("rule")
        if isinstance(rule, dict) and rule.get("table") != OWN_TABLE and not _our_nft_rule(rule):
            usage.rules += 1
    return usage


@dataclass
class Decision:
    backends: list[str]
    reasons: list[str]


def decide(requested: str, legacy: Usage | None, nft: Usage | None) -> Decision:
    """Pure decision; ``None`` usage means that backend cannot be used on this host."""
    if requested not in CHOICES:
        raise ValueError(f"firewallBackend must be one of {', '.join(CHOICES)}, got {requested!r}")
    if requested == "none":
        return Decision([], ["firewallBackend is none: no firewall rules"])
    if requested != "auto":
        return Decision([requested], [f"firewallBackend is {requested}"])
    usage = {"nftables": nft, "iptables": legacy}
    reasons = [
        f"{name}: " + ("not available" if u is None else u.describe()) for name, u in usage.items()
    ]
    hinted = [name for name, u in usage.items() if u is not None and u.hints]
    in_use = [name for name, u in usage.items() if u is not None and u.in_use]
    if hinted:
        chosen = hinted
        reasons.append("kubelet's hint chains name " + " and ".join(hinted))
    elif in_use:
        chosen = in_use
        reasons.append("backend(s) in use: " + ", ".join(in_use))
    else:
        available = [name for name, u in usage.items() if u is not None]
        chosen = available[:1]
        reasons.append("nothing in use: default " + (chosen[0] if chosen else "none available"))
    others = [name for name in in_use if name not in chosen]
    if others:
        reasons.append(
            "also in use (legacy and nft tables are both evaluated): " + ", ".join(others)
        )
    return Decision(chosen + others, reasons)


# ------------------------------------------------------------------ gathering (side-effect free)


def legacy_tables() -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for family, path in ((4, "/proc/net/ip_tables_names"), (6, "/proc/net/ip6_tables_names")):
        try:
            with open(path) as fh:
                out[family] = set(fh.read().split())
        except OSError:
            out[family] = set()
    return out


def gather_legacy() -> Usage:
    tables = legacy_tables()
    texts: dict[int, str] = {}
    missing: list[str] = []
    for family, names in tables.items():
        if not names:
            continue
        tool = "iptables-legacy-save" if family == 4 else "ip6tables-legacy-save"
        if shutil.which(tool) is None:
            missing.append(tool)
            continue
        proc = subprocess.run([tool], capture_output=True, text=True, timeout=30, check=False)
        texts[family] = proc.stdout
    usage = legacy_usage_from_save(texts)
    if missing and not usage.in_use:
        usage.note = f"legacy tables exist but {', '.join(missing)} is missing to inspect them"
    return usage


def python_iptables_available() -> str | None:
    """None if python-iptables can be loaded, else why not."""
    try:
        from . import iptc_loader

        iptc_loader.load()
    except Exception as exc:  # ImportError, OSError from dlopen, XTablesError
        return f"python-iptables unusable: {exc}"
    return None
