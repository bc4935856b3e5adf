"""FORWARD policy, br_netfilter and the iptables backend, from the rules as read."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ....agent.firewall.detect import HINT_CHAINS, Usage
from ....agent.firewall.model import CHAIN_PREFIX, FORWARD_CHAIN, OWN_TABLE, pod_chain, pod_comment
from ....agent.firewall.plan import bridge_rule
from ....agent.firewall.rules import XRule, from_nft_rule, parse_iptables_line
from ..findings import BACKEND, BR_NETFILTER, FORWARD, Finding, bad, ok


@dataclass
class FilterPlace:
    """One table whose forward hook can drop pod traffic, as read from the host."""

    label: str  # "iptables-legacy filter", "nft inet firewalld filter_FORWARD"
    tool: str  # "iptables-legacy", "ip6tables-nft", "nft"
    families: frozenset[int]
    policy: str  # upper case: ACCEPT, DROP
    hook: list[XRule]
    cbd: list[XRule] | None  # our CBD-FORWARD chain in this table, None if absent
    nft_ref: str = ""  # "inet firewalld filter_FORWARD" for native tables


@dataclass(frozen=True)
class PodFw:
    """What one attachment expects in every filter place of its families."""

    label: str
    network: str
    container_id: str
    ifname: str
    families: frozenset[int]

    @property
    def entry(self) -> XRule:
        return XRule(
            target=pod_chain(self.network, self.container_id, self.ifname),
            comment=pod_comment(self.network, self.container_id, self.ifname),
        )


def places_from_save(text: str, tool: str) -> list[FilterPlace]:
    """The filter table's FORWARD hook from ``ip(6)tables-{legacy,nft}-save`` output."""
    family = 6 if tool.startswith("ip6") else 4
    table = ""
    policy = ""
    chains: dict[str, list[XRule]] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif table != "filter":
            continue
        elif line.startswith(":"):
            name, _, rest = line[1:].partition(" ")
            chains.setdefault(name, [])
            if name == "FORWARD":
                policy = rest.split(" ", 1)[0].upper()
        else:
            parsed = parse_iptables_line(line)
            if parsed is not None:
                chains.setdefault(parsed[0], []).append(parsed[1])
    if "FORWARD" not in chains:
        return []
    return [
        FilterPlace(
            label=f"{tool} filter",
            tool=tool,
            families=frozenset({family}),
            policy=policy or "ACCEPT",
            hook=chains["FORWARD"],
            cbd=chains.get(FORWARD_CHAIN),
        )
    ]


_NFT_FAMILIES = {"ip": frozenset({4}), "ip6": frozenset({6}), "inet": frozenset({4, 6})}


def places_from_nft(
    items: Sequence[Mapping[str, Any]], skip: Iterable[tuple[str, str]] = ()
) -> list[FilterPlace]:
    """Forward filter base chains of native tables in ``nft -j list ruleset`` items.

    ``skip`` lists (family, table) pairs read through iptables-nft-save instead.
    """
    skipped = set(skip)
    bases: list[dict[str, Any]] = []
    rules: dict[tuple[str, str, str], list[XRule]] = {}
    tables_with_cbd: set[tuple[str, str]] = set()
    for item in items:
        chain = item.get("chain")
        if isinstance(chain, dict):
            key = (str(chain.get("family")), str(chain.get("table")))
            if chain.get("name") == FORWARD_CHAIN:
                tables_with_cbd.add(key)
            if (
                chain.get("hook") == "forward"
                and chain.get("type") == "filter"
                and key[0] in _NFT_FAMILIES
                and key[1] != OWN_TABLE
                and key not in skipped
            ):
                bases.append(chain)
        rule = item.get("rule")
        if isinstance(rule, dict):
            key3 = (str(rule.get("family")), str(rule.get("table")), str(rule.get("chain")))
            rules.setdefault(key3, []).append(from_nft_rule(rule))
    out: list[FilterPlace] = []
    for chain in bases:
        family, table, name = str(chain["family"]), str(chain["table"]), str(chain.get("name"))
        has_cbd = (family, table) in tables_with_cbd
        out.append(
            FilterPlace(
                label=f"nft {family} {table} {name}",
                tool="nft",
                families=_NFT_FAMILIES[family],
                policy=str(chain.get("policy", "accept")).upper(),
                hook=rules.get((family, table, name), []),
                cbd=rules.get((family, table, FORWARD_CHAIN), []) if has_cbd else None,
                nft_ref=f"{family} {table} {name}",
            )
        )
    return out


def _unconditional_drop(rule: XRule) -> bool:
    return (
        rule.target in ("DROP", "REJECT")
        and not rule.extra
        and not any((rule.iif, rule.oif, rule.src, rule.dst, rule.ctstate))
    )


def _accept_bridge_cmd(place: FilterPlace, bridge: str) -> str:
    if place.tool == "nft":
        return f'nft insert rule {place.nft_ref} iifname "{bridge}" oifname "{bridge}" accept'
    return f"{place.tool} -I FORWARD -i {bridge} -o {bridge} -j ACCEPT"


def _fw_fix(place: FilterPlace, bridge: str) -> str:
    return (
        "The agent writes these rules at the first pod ADD and re-asserts them every "
        "--firewall-interval seconds (60 by default) in every backend in use. If they are "
        "missing: is the agent running (agent check)? Is firewallBackend in the network config "
        f'"none" or a backend other than {place.tool}? Use "auto". Something may flush '
        "FORWARD (firewalld --reload, ufw reload, a docker restart): the agent restores it at "
        f"its next pass. By hand, the equivalent for the bridge: `{_accept_bridge_cmd(place, bridge)}`."
    )


def check_forward(
    places: Sequence[FilterPlace], bridge: str, bridge_exists: bool, pods: Sequence[PodFw]
) -> list[Finding]:
    findings: list[Finding] = []
    dropping = [p for p in places if p.policy != "ACCEPT"]
    if not dropping:
        labels = ", ".join(p.label for p in places) or "no filter table"
        return [ok(FORWARD, f"no FORWARD policy drops ({labels})")]
    if not bridge_exists and not pods:
        names = ", ".join(f"{p.label} ({p.policy})" for p in dropping)
        return [ok(FORWARD, f"{names}; no bridge {bridge} and no pods yet: nothing to forward")]
    for place in dropping:
        missing: list[str] = []
        jump = next((i for i, r in enumerate(place.hook) if r.target == FORWARD_CHAIN), None)
        if jump is None:
            missing.append(f"the jump to {FORWARD_CHAIN} in the forward hook")
        else:
            blockers = [r for r in place.hook[:jump] if _unconditional_drop(r)]
            if blockers:
                findings.append(
                    bad(
                        FORWARD,
                        f"{place.label}: a rule that drops everything ({blockers[0].target}) "
                        f"comes before our jump to {FORWARD_CHAIN}, so pod traffic never "
                        "reaches it",
                        "Move that rule below ours or delete it (`iptables-save`/`nft list "
                        "ruleset` shows the order); the agent inserts its jump at the top, "
                        "so whatever inserted the drop did so later.",
                    )
                )
        cbd = place.cbd or []
        if bridge_rule(bridge) not in cbd:
            missing.append(f"the accept for {bridge} -> {bridge}")
        for pod in pods:
            if pod.families & place.families and pod.entry not in cbd:
                missing.append(f"the rules of {pod.label}")
        if missing:
            findings.append(
                bad(
                    FORWARD,
                    f"{place.label}: forward policy {place.policy} and our rules are missing "
                    f"({'; '.join(missing)}): pods' routed traffic (their default route is "
                    "via the node) is dropped",
                    _fw_fix(place, bridge),
                )
            )
    if not findings:
        names = ", ".join(f"{p.label} ({p.policy})" for p in dropping)
        findings.append(ok(FORWARD, f"our rules open the forward path in {names}"))
    return findings


def _accepts_bridge(place: FilterPlace, bridge: str) -> bool:
    for rule in [*place.hook, *(place.cbd or [])]:
        if (
            rule.target == "ACCEPT"
            and rule.iif == bridge
            and rule.oif == bridge
            and not rule.extra
            and not any((rule.src, rule.dst, rule.ctstate))
        ):
            return True
    return False


@dataclass(frozen=True)
class BrNetfilter:
    """``net.bridge.bridge-nf-call-ip(6)tables`` (None: br_netfilter not loaded) and the
    bridge's own ``nf_call_ip(6)tables`` option (None: no bridge)."""

    call_iptables: str | None
    call_ip6tables: str | None
    bridge_iptables: str | None = None
    bridge_ip6tables: str | None = None


def check_br_netfilter(
    nf: BrNetfilter,
    places: Sequence[FilterPlace],
    bridge: str,
    bridge_exists: bool,
    kube_proxy: bool,
) -> list[Finding]:
    if nf.call_iptables is None:
        if kube_proxy:
            return [
                bad(
                    BR_NETFILTER,
                    "br_netfilter is not loaded but kube-proxy rules exist: when a pod reaches "
                    "a Service whose endpoint is another pod on this bridge, the reply is "
                    "bridged straight back, skipping conntrack, and the connection breaks",
                    "`modprobe br_netfilter` and `sysctl -w net.bridge.bridge-nf-call-"
                    "iptables=1`; persist them in /etc/modules-load.d/br_netfilter.conf and "
                    "/etc/sysctl.d/99-kubernetes.conf.",
                )
            ]
        return [ok(BR_NETFILTER, "br_netfilter not loaded: bridged frames skip iptables")]
    findings: list[Finding] = []
    effective = {
        4: "1" in (nf.call_iptables, nf.bridge_iptables),
        6: "1" in (nf.call_ip6tables, nf.bridge_ip6tables),
    }
    if bridge_exists:
        for family, on in effective.items():
            if not on:
                continue
            knob = "bridge-nf-call-iptables" if family == 4 else "bridge-nf-call-ip6tables"
            for place in places:
                if family not in place.families or place.policy == "ACCEPT":
                    continue
                if _accepts_bridge(place, bridge):
                    continue
                findings.append(
                    bad(
                        BR_NETFILTER,
                        f"{knob}=1 sends frames bridged on {bridge} (pod <-> LAN, pod <-> pod) "
                        f"through FORWARD, where {place.label} has policy {place.policy} and "
                        f"nothing accepts {bridge} -> {bridge}: pods cannot talk to the LAN",
                        "Let the agent add its rules (see forward-policy), or add "
                        f"`{_accept_bridge_cmd(place, bridge)}`. Setting "
                        f"net.bridge.{knob}=0 also works, but kube-proxy needs it on.",
                    )
                )
    if kube_proxy and not effective[4]:
        findings.append(
            bad(
                BR_NETFILTER,
                "bridge-nf-call-iptables=0 while kube-proxy rules exist: when a pod reaches a "
                "Service whose endpoint is another pod on this bridge, the reply is bridged "
                "straight back, skipping conntrack, and the connection breaks",
                "`sysctl -w net.bridge.bridge-nf-call-iptables=1` and persist it in "
                "/etc/sysctl.d/99-kubernetes.conf.",
            )
        )
    if not findings:
        findings.append(
            ok(
                BR_NETFILTER,
                f"bridge-nf-call-iptables={nf.call_iptables}, "
                f"bridge-nf-call-ip6tables={nf.call_ip6tables}",
            )
        )
    return findings


def kube_proxy_present(
    xtables_texts: Iterable[str], nft_items: Sequence[Mapping[str, Any]]
) -> bool:
    for text in xtables_texts:
        if re.search(r"^:KUBE-SERVICES ", text, re.MULTILINE):
            return True
    for item in nft_items:
        chain = item.get("chain")
        if (
            isinstance(chain, dict)
            and chain.get("name") in ("KUBE-SERVICES", "services")
            and chain.get("table") in ("nat", "kube-proxy")
        ):
            return True
    return False


def ours_in_save(texts: Iterable[str]) -> bool:
    return any(re.search(rf"^:{CHAIN_PREFIX}", t, re.MULTILINE) for t in texts)


def ours_in_nft(items: Sequence[Mapping[str, Any]]) -> bool:
    for item in items:
        chain = item.get("chain")
        if isinstance(chain, dict) and (
            chain.get("table") == OWN_TABLE or str(chain.get("name", "")).startswith(CHAIN_PREFIX)
        ):
            return True
    return False


def iptables_command_backend(version_output: str) -> str | None:
    """``iptables -V`` -> "nftables" / "iptables" (legacy) / None."""
    if "nf_tables" in version_output:
        return "nftables"
    if "legacy" in version_output:
        return "iptables"
    return None


def check_backend(
    legacy: Usage | None,
    nft: Usage | None,
    ours: Mapping[str, bool],
    iptables_cmd: str | None,
) -> list[Finding]:
    """``legacy``/``nft``: what each backend holds besides our rules (None: unavailable);
    ``ours``: backend -> whether our rules are there; backends are "iptables"/"nftables"."""
    usage = {"iptables": legacy, "nftables": nft}
    names = {"iptables": "iptables-legacy", "nftables": "nftables (iptables-nft)"}
    hinted = [b for b, u in usage.items() if u is not None and u.hints]
    findings: list[Finding] = []
    if len(hinted) == 1:
        kube = hinted[0]
        for other, u in usage.items():
            if other == kube or u is None:
                continue
            if u.rules or u.forward_policies:
                findings.append(
                    bad(
                        BACKEND,
                        f"kubelet uses {names[kube]} (its {HINT_CHAINS[0]}/{HINT_CHAINS[1]} "
                        f"chains are there) but {names[other]} holds {u.describe()}: some "
                        "tool writes to the other backend; both are evaluated, so a drop in "
                        "either wins and kube-proxy's rules never see the other's",
                        f"Make every tool use {names[kube]}: on Debian/Ubuntu `update-"
                        f"alternatives --set iptables /usr/sbin/iptables-"
                        f"{'nft' if kube == 'nftables' else 'legacy'}` (and ip6tables), then "
                        "restart the tools that wrote the stray rules (docker, firewalld, "
                        "ufw) and remove their rules from the other backend "
                        f"(`{'iptables-legacy' if other == 'iptables' else 'iptables-nft'}-"
                        "save` shows them). The plugin writes to both meanwhile.",
                    )
                )
            if ours.get(other) and not ours.get(kube):
                findings.append(
                    bad(
                        BACKEND,
                        f"our rules are in {names[other]} only, but kubelet uses {names[kube]}",
                        'Set firewallBackend to "auto" (or to the kubelet\'s backend) in the '
                        "network config; the agent adds its rules there at the next ADD or "
                        "re-assertion.",
                    )
                )
        if iptables_cmd is not None and iptables_cmd != kube:
            findings.append(
                bad(
                    BACKEND,
                    f"the `iptables` command on this host is {names[iptables_cmd]}, but "
                    f"kubelet uses {names[kube]}: rules added or listed with `iptables` are "
                    "not where kube-proxy looks",
                    f"`update-alternatives --set iptables /usr/sbin/iptables-"
                    f"{'nft' if kube == 'nftables' else 'legacy'}` (and ip6tables).",
                )
            )
    elif len(hinted) == 2:
        findings.append(
            bad(
                BACKEND,
                "kubelet hint chains exist in both iptables-legacy and nftables: two "
                "kubelets/kube-proxies (or a leftover from a switch) disagree on the backend",
                "Delete the stale KUBE-IPTABLES-HINT/KUBE-KUBELET-CANARY chains from the backend "
                "kube-proxy no longer uses (mangle table), and restart kubelet.",
            )
        )
    if not findings:
        parts = [
            f"{names[b]}: {'unavailable' if u is None else u.describe()}" for b, u in usage.items()
        ]
        findings.append(ok(BACKEND, "; ".join(parts)))
    return findings


def families_of(ips: Iterable[str]) -> frozenset[int]:
    fams = set()
    for ip in ips:
        try:
            fams.add(ipaddress.ip_interface(ip).version)
        except ValueError:
            continue
    return frozenset(fams)
