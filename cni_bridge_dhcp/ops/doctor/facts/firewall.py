"""Firewall facts: the iptables (legacy, nft) and native nftables rulesets, br_netfilter."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ....agent.firewall import detect
from ....agent.firewall.libnft import Nft
from .. import checks as dc
from .common import read_text, run
from .context import Context, label

log = logging.getLogger(__name__)


@dataclass
class FirewallFacts:
    legacy_texts: dict[int, str]
    nft_texts: dict[int, str]
    nft_items: list[dict[str, Any]]
    nft_available: bool
    places: list[dc.FilterPlace]


def _nft_ruleset() -> tuple[list[dict[str, Any]], bool]:
    try:
        return Nft().list_ruleset(), True
    except Exception as exc:  # no libnftables, or a failing netlink call
        log.debug("libnftables: %s", exc)
    out = run(["nft", "-j", "list", "ruleset"])
    if out is None:
        return [], False
    try:
        items = json.loads(out).get("nftables", [])
    except (ValueError, AttributeError):
        return [], False
    return [i for i in items if isinstance(i, dict)], True


def gather_firewall() -> FirewallFacts:
    legacy_texts: dict[int, str] = {}
    for family, names in detect.legacy_tables().items():
        if not names:
            continue  # reading would create tables: there is nothing to read anyway
        tool = "iptables-legacy-save" if family == 4 else "ip6tables-legacy-save"
        out = run([tool])
        if out is not None:
            legacy_texts[family] = out
    items, nft_ok = _nft_ruleset()
    nft_texts: dict[int, str] = {}
    skip: list[tuple[str, str]] = []
    for family, fam_name, tool in (
        (4, "ip", "iptables-nft-save"),
        (6, "ip6", "ip6tables-nft-save"),
    ):
        has_filter = any(
            isinstance(i.get("table"), dict)
            and i["table"].get("family") == fam_name
            and i["table"].get("name") == "filter"
            for i in items
        )
        if not has_filter:
            continue
        out = run([tool, "-t", "filter"])
        if out is not None and "incompatible" not in out:
            nft_texts[family] = out
            skip.append((fam_name, "filter"))
    places: list[dc.FilterPlace] = []
    for family, text in sorted(legacy_texts.items()):
        places += dc.places_from_save(
            text, "iptables-legacy" if family == 4 else "ip6tables-legacy"
        )
    for family, text in sorted(nft_texts.items()):
        places += dc.places_from_save(text, "iptables-nft" if family == 4 else "ip6tables-nft")
    places += dc.places_from_nft(items, skip)
    return FirewallFacts(legacy_texts, nft_texts, items, nft_ok, places)


def _pods_fw(ctx: Context) -> list[dc.PodFw]:
    pods = []
    for att in ctx.attachments:
        result = att.get("result") or {}
        if att.get("state") != "ready" or result.get("role") == "ipam":
            continue
        if (result.get("fw") or {}).get("backend") == "none":
            continue
        families = dc.families_of(att.get("ips") or [])
        if families:
            pods.append(
                dc.PodFw(
                    label(att),
                    str(att["network"]),
                    str(att["container_id"]),
                    str(att["ifname"]),
                    families,
                )
            )
    return pods


def firewall_checks(ctx: Context, fw: FirewallFacts) -> list[dc.Finding]:
    bridge_exists = ctx.bridge in ctx.links
    findings = dc.check_forward(fw.places, ctx.bridge, bridge_exists, _pods_fw(ctx))

    def sysctl(name: str) -> str | None:
        text = read_text(Path("/proc/sys/net/bridge") / name)
        return text.strip() if text is not None else None

    def bridge_opt(name: str) -> str | None:
        text = read_text(Path("/sys/class/net") / ctx.bridge / "bridge" / name)
        return text.strip() if text is not None else None

    nf = dc.BrNetfilter(
        sysctl("bridge-nf-call-iptables"),
        sysctl("bridge-nf-call-ip6tables"),
        bridge_opt("nf_call_iptables"),
        bridge_opt("nf_call_ip6tables"),
    )
    kube = dc.kube_proxy_present([*fw.legacy_texts.values(), *fw.nft_texts.values()], fw.nft_items)
    findings += dc.check_br_netfilter(nf, fw.places, ctx.bridge, bridge_exists, kube)
    legacy = detect.legacy_usage_from_save(fw.legacy_texts)
    nft = detect.nft_usage_from_ruleset(fw.nft_items) if fw.nft_available else None
    ours = {
        "iptables": dc.ours_in_save(fw.legacy_texts.values()),
        "nftables": dc.ours_in_nft(fw.nft_items),
    }
    version = run(["iptables", "-V"])
    findings += dc.check_backend(
        legacy, nft, ours, dc.iptables_command_backend(version) if version else None
    )
    return findings
