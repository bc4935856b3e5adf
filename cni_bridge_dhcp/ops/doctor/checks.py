"""`doctor`'s decisions: each check turns captured facts into findings, with no I/O.

Gathering (subprocesses, sockets, files, the DHCP probe) lives in ``doctor``; everything
here takes plain data so every decision can be tested on captured inputs.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...agent.firewall.detect import HINT_CHAINS, Usage
from ...agent.firewall.model import CHAIN_PREFIX, FORWARD_CHAIN, OWN_TABLE, pod_chain, pod_comment
from ...agent.firewall.plan import bridge_rule
from ...agent.firewall.rules import XRule, from_nft_rule, parse_iptables_line

# Check names, in the order they are reported.
AGENT = "agent"
CNI_CONFIG = "cni-config"
UPLINK = "uplink"
FORWARD = "forward-policy"
BR_NETFILTER = "br-netfilter"
BACKEND = "iptables-backend"
POD_ROUTES = "pod-routes"
NET_MANAGER = "network-manager"
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


# ============================================================================ agent


def check_agent(socket_path: str, error: str | None, socket_exists: bool, pods: int) -> Finding:
    if error is None:
        return ok(AGENT, f"agent answers at {socket_path} ({pods} attachment(s))")
    if socket_exists:
        problem = (
            f"agent does not answer at {socket_path} ({error}); the socket file exists, so "
            "the agent probably died without removing it"
        )
    else:
        problem = f"agent is not running: no socket at {socket_path} ({error})"
    fix = (
        "Every pod ADD fails with CNI error 11 until the agent runs. Start it: "
        "`systemctl start cni-bridge-dhcp.socket` (systemd install), or check the DaemonSet "
        "(`kubectl -n kube-system get pods -l app=cni-bridge-dhcp -o wide` on this node, then "
        "`kubectl logs` of that pod); its log file names the reason it stopped. "
        "If the agent uses another socket, pass it with --socket."
    )
    return bad(AGENT, problem, fix)


# ============================================================================ CNI config


@dataclass(frozen=True)
class ConfFile:
    name: str
    data: dict[str, Any] | None  # None: unreadable or not JSON
    error: str = ""


CONF_SUFFIXES = (".conf", ".conflist", ".json")


def our_plugin(conf: Mapping[str, Any]) -> dict[str, Any] | None:
    """Our plugin's entry in a .conf or .conflist document, if any."""
    plugins = conf.get("plugins") if "plugins" in conf else [conf]
    if not isinstance(plugins, list):
        return None
    for plugin in plugins:
        if isinstance(plugin, dict) and plugin.get("type") == "cni-bridge-dhcp":
            return plugin
    return None


def check_cni_config(conf_dir: str, files: Sequence[ConfFile]) -> Finding:
    candidates = sorted((f for f in files if f.name.endswith(CONF_SUFFIXES)), key=lambda f: f.name)
    ours = [f for f in candidates if f.data is not None and our_plugin(f.data) is not None]
    broken = [f for f in candidates if f.data is None]
    if not ours:
        seen = ", ".join(f.name for f in candidates) or "no network config at all"
        problems = f"no network config in {conf_dir} uses cni-bridge-dhcp ({seen})"
        if broken:
            problems += "; unreadable: " + ", ".join(f"{f.name} ({f.error})" for f in broken)
        return bad(
            CNI_CONFIG,
            problems,
            "The DaemonSet's install container writes it (check its logs); by hand, copy "
            f"examples/10-cni-bridge-dhcp.conflist to {conf_dir}/ and adjust bridge and "
            "uplinkInterface.",
        )
    first = candidates[0]
    if first.name != ours[0].name:
        what = "unreadable" if first.data is None else f"network {first.data.get('name')!r}"
        return bad(
            CNI_CONFIG,
            f"the container runtime uses the first config in {conf_dir}, {first.name} "
            f"({what}), not {ours[0].name}",
            f"Remove or rename {first.name} (e.g. an old flannel/bridge config), or give ours "
            f"a name that sorts first (e.g. 00-cni-bridge-dhcp.conflist); then restart the "
            "container runtime so it reloads the config.",
        )
    return ok(CNI_CONFIG, f"{conf_dir}/{ours[0].name} is the active network config")


# ============================================================================ uplink


@dataclass(frozen=True)
class LinkFacts:
    name: str
    kind: str  # "bridge", "veth", "" (physical) ...
    master: str | None
    wireless: bool
    global_addrs: tuple[str, ...]


def check_uplink(
    uplink: str, bridge: str, links: Mapping[str, LinkFacts], takeover_recorded: bool
) -> Finding:
    up = links.get(uplink)
    br = links.get(bridge)
    if up is None:
        return bad(
            UPLINK,
            f"uplink {uplink!r} does not exist on this node",
            "Set uplinkInterface in the network config (and UPLINK in the DaemonSet's "
            "ConfigMap) to the node's LAN interface (see `ip -br link`), or pass --uplink.",
        )
    if up.wireless:
        return bad(
            UPLINK,
            f"uplink {uplink!r} is a Wi-Fi interface: a station cannot be bridged (the access "
            "point drops frames from MAC addresses that did not associate)",
            "Use a wired interface as uplinkInterface; for Wi-Fi nodes use a routed or "
            "macvlan-free setup instead of this plugin.",
        )
    if br is None:
        if takeover_recorded:
            return bad(
                UPLINK,
                f"the agent recorded a takeover into bridge {bridge!r}, but the bridge is gone",
                "Something deleted the bridge (a network manager restart?): see the "
                "network-manager check, then restart the agent; the next pod ADD builds it "
                "again.",
            )
        return ok(UPLINK, f"{uplink} not taken over yet (happens at the first pod ADD)")
    if br.kind != "bridge":
        return bad(
            UPLINK,
            f"{bridge!r} exists but is a {br.kind or 'non-bridge'} link",
            "Delete or rename that link, or set a different bridge name in the network config.",
        )
    if up.master != bridge:
        where = f"enslaved to {up.master!r}" if up.master else "not a port of any bridge"
        return bad(
            UPLINK,
            f"uplink {uplink!r} is {where}, so pods on {bridge!r} are cut off the LAN",
            f"Something released it (a network manager re-applying its config? see the "
            f"network-manager check). Put it back with `ip link set {uplink} master {bridge}` "
            f"(the node's addresses stay on {bridge}), and make the network manager configure "
            f"the bridge instead of {uplink}.",
        )
    if up.global_addrs:
        return bad(
            UPLINK,
            f"uplink {uplink!r} is a port of {bridge!r} but holds addresses "
            f"{', '.join(up.global_addrs)}; addresses on a bridge port are unusable",
            f"A network manager or DHCP client re-configured {uplink} (see the network-manager "
            f"check). Remove them: `ip addr flush dev {uplink} scope global`; the node's "
            f"addresses belong on {bridge}.",
        )
    return ok(UPLINK, f"{uplink} is a port of {bridge}")


# ============================================================================ firewall


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


# ============================================================================ pod routes


@dataclass(frozen=True)
class PodRouteFacts:
    label: str
    netns: str
    ifname: str
    expected_gw: str | None  # None: the pod is not meant to have a default route from us
    routes: list[dict[str, Any]] | None  # `ip -j -4 route show table main` in the pod
    error: str = ""


def default_route_problem(
    expected_gw: str, ifname: str, routes: Sequence[Mapping[str, Any]]
) -> str | None:
    defaults = [r for r in routes if r.get("dst") in ("default", "0.0.0.0/0")]
    if not defaults:
        return "has no default route"
    best = min(defaults, key=lambda r: int(r.get("metric", 0) or 0))
    gw, dev = best.get("gateway"), best.get("dev")
    if gw != expected_gw:
        how = f"via {gw}" if gw else f"directly on {dev}"
        return f"default route goes {how}, not via the node {expected_gw}"
    if dev != ifname:
        return f"default route leaves through {dev}, not {ifname}"
    return None


def check_pod_routes(pods: Sequence[PodRouteFacts]) -> list[Finding]:
    findings: list[Finding] = []
    checked = 0
    for pod in pods:
        if pod.expected_gw is None:
            continue
        if pod.routes is None:
            if pod.error:
                findings.append(
                    bad(
                        POD_ROUTES,
                        f"{pod.label}: cannot read its routes ({pod.error})",
                        "See the state check: the pod's namespace may be gone.",
                    )
                )
            continue
        checked += 1
        problem = default_route_problem(pod.expected_gw, pod.ifname, pod.routes)
        if problem:
            findings.append(
                bad(
                    POD_ROUTES,
                    f"{pod.label}: {problem}; its traffic then bypasses the node's "
                    "conntrack/kube-proxy and comes back asymmetrically",
                    "Something inside the pod replaced the route the plugin set (a DHCP client "
                    "or init script in the container, or another plugin in the chain). Put it "
                    f"back: `nsenter --net={pod.netns} ip route replace default via "
                    f"{pod.expected_gw} dev {pod.ifname}` (the on-link route to "
                    f"{pod.expected_gw} must be there too), then stop whatever changed it; "
                    "or recreate the pod.",
                )
            )
    if not findings:
        findings.append(ok(POD_ROUTES, f"{checked} pod(s) route via the node"))
    return findings


# ============================================================================ network managers


@dataclass(frozen=True)
class ConfigText:
    path: str  # as shown to the user
    kind: str  # "netplan", "networkd", "nm", "ifupdown"
    text: str


def parse_simple_yaml(text: str) -> Any:
    """The block-style YAML subset netplan files use (mappings, sequences, flow lists,
    scalars, comments). Raises ValueError on anything else."""
    lines: list[tuple[int, str]] = []
    for raw in text.splitlines():
        stripped = _strip_comment(raw).rstrip()
        if not stripped.strip() or stripped.strip() in ("---", "..."):
            continue
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise ValueError("tabs in indentation")
        lines.append((len(stripped) - len(stripped.lstrip()), stripped.strip()))
    if not lines:
        return {}
    value, pos = _parse_block(lines, 0, lines[0][0])
    if pos != len(lines):
        raise ValueError(f"unexpected indentation at {lines[pos][1]!r}")
    return value


def _strip_comment(line: str) -> str:
    quote = ""
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _parse_block(lines: list[tuple[int, str]], pos: int, indent: int) -> tuple[Any, int]:
    if lines[pos][1].startswith("- ") or lines[pos][1] == "-":
        seq: list[Any] = []
        while pos < len(lines) and lines[pos][0] == indent and lines[pos][1].startswith("-"):
            rest = lines[pos][1][1:].strip()
            if not rest:
                pos += 1
                if pos < len(lines) and lines[pos][0] > indent:
                    item, pos = _parse_block(lines, pos, lines[pos][0])
                else:
                    item = None
                seq.append(item)
                continue
            # "- key: value" opens a mapping whose other keys are indented past the dash
            sub_indent = indent + 2
            lines[pos] = (sub_indent, rest)
            if _split_key(rest) is not None:
                item, pos = _parse_block(lines, pos, sub_indent)
            else:
                item, pos = _scalar(rest), pos + 1
            seq.append(item)
        return seq, pos
    mapping: dict[str, Any] = {}
    while pos < len(lines) and lines[pos][0] == indent:
        split = _split_key(lines[pos][1])
        if split is None:
            raise ValueError(f"expected 'key: value', got {lines[pos][1]!r}")
        key, rest = split
        pos += 1
        if rest:
            mapping[key] = _scalar(rest)
        elif pos < len(lines) and lines[pos][0] > indent:
            mapping[key], pos = _parse_block(lines, pos, lines[pos][0])
        elif pos < len(lines) and lines[pos][0] == indent and lines[pos][1].startswith("-"):
            mapping[key], pos = _parse_block(lines, pos, indent)
        else:
            mapping[key] = None
    if pos < len(lines) and lines[pos][0] > indent:
        raise ValueError(f"unexpected indentation at {lines[pos][1]!r}")
    return mapping, pos


def _split_key(text: str) -> tuple[str, str] | None:
    if text.startswith("- "):
        return None
    m = re.match(r"""^("[^"]*"|'[^']*'|[^\s:"'{}\[\]][^:]*?)\s*:(?:\s+(.*)|$)""", text)
    if m is None:
        return None
    return str(_scalar(m.group(1))), (m.group(2) or "").strip()


def _scalar(text: str) -> Any:
    text = text.strip()
    if text[:1] in ("&", "*", "!", "|", ">", "%", "@", "`"):
        raise ValueError(f"unsupported YAML feature in {text!r}")
    if text.count("[") != text.count("]") or text.count("{") != text.count("}"):
        raise ValueError(f"unbalanced flow collection in {text!r}")
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [_scalar(part) for part in _split_flow(inner)] if inner else []
    if text.startswith("{") and text.endswith("}"):
        out: dict[str, Any] = {}
        for part in _split_flow(text[1:-1]):
            key, _, value = part.partition(":")
            out[str(_scalar(key))] = _scalar(value) if value.strip() else None
        return out
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("null", "~", ""):
        return None
    return text


def _split_flow(text: str) -> list[str]:
    parts, depth, current, quote = [], 0, "", ""
    for c in text:
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += c
    if current.strip():
        parts.append(current.strip())
    return parts


def parse_ini(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of a systemd unit / NetworkManager keyfile, in order."""
    out: list[tuple[str, str, str]] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        key, sep, value = line.partition("=")
        if sep:
            out.append((section, key.strip(), value.strip()))
    return out


def _names_match(patterns: str, name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns.split())


def _addressing_words(entry: Mapping[str, Any]) -> list[str]:
    words = []
    for key in ("dhcp4", "dhcp6"):
        if entry.get(key) is True:
            words.append(f"{key}: true")
    for key in ("addresses", "gateway4", "gateway6", "routes"):
        if entry.get(key):
            words.append(key)
    return words


def netplan_snippet(uplink: str, bridge: str, dhcp: bool, mac: str | None) -> str:
    addressing = "dhcp4: true" if dhcp else "addresses: [<the node's address>/<prefix>]"
    mac_line = f"\n      macaddress: {mac}" if mac else ""
    return (
        "network:\n  version: 2\n  ethernets:\n"
        f"    {uplink}:\n      dhcp4: false\n      dhcp6: false\n"
        "  bridges:\n"
        f"    {bridge}:\n      interfaces: [{uplink}]{mac_line}\n      {addressing}\n"
        "      parameters:\n        stp: false\n        forward-delay: 0"
    )


def _netplan(cfg: ConfigText, uplink: str, bridge: str, mac: str | None) -> list[tuple[str, str]]:
    try:
        doc = parse_simple_yaml(cfg.text)
    except ValueError as exc:
        if re.search(rf"(^|\W){re.escape(uplink)}(\W|$)", cfg.text):
            return [
                (
                    f"{cfg.path} mentions {uplink} (not parsed: {exc})",
                    f"Make netplan configure the bridge instead:\n{netplan_snippet(uplink, bridge, True, mac)}",
                )
            ]
        return []
    net = doc.get("network") if isinstance(doc, dict) else None
    if not isinstance(net, dict):
        return []
    ethernets = net.get("ethernets") or {}
    bridges = net.get("bridges") or {}
    if not isinstance(ethernets, dict) or not isinstance(bridges, dict):
        return []
    ids = []
    for key, entry in ethernets.items():
        entry = entry if isinstance(entry, dict) else {}
        match = entry.get("match") if isinstance(entry.get("match"), dict) else None
        if (
            key == uplink
            or (
                match and isinstance(match.get("name"), str) and _names_match(match["name"], uplink)
            )
            or (match and mac and str(match.get("macaddress", "")).lower() == mac.lower())
        ):
            ids.append((key, entry))
    out: list[tuple[str, str]] = []
    for key, entry in ids:
        in_bridges = [
            name
            for name, br in bridges.items()
            if isinstance(br, dict) and key in (br.get("interfaces") or [])
        ]
        if bridge in in_bridges:
            continue
        if in_bridges:
            out.append(
                (
                    f"{cfg.path} bridges {uplink} into {in_bridges[0]!r}, but the plugin uses "
                    f"{bridge!r}",
                    f'Set "bridge": "{in_bridges[0]}" in the network config (and BRIDGE in the '
                    f"DaemonSet's ConfigMap), or rename the bridge in {cfg.path} to {bridge}.",
                )
            )
            continue
        words = _addressing_words(entry)
        if not words:
            continue
        out.append(
            (
                f"{cfg.path} configures {uplink} itself ({', '.join(words)}): at the next "
                f"`netplan apply`, reboot or DHCP renewal it puts the node's address back on "
                f"{uplink} and fights the plugin's bridge",
                f"Make netplan build the bridge and leave {uplink} bare; replace the {key} "
                f"stanza with:\n{netplan_snippet(uplink, bridge, entry.get('dhcp4') is True, mac)}\n"
                "then `netplan generate` (apply it at a quiet moment: the agent accepts a "
                "pre-configured bridge as is).",
            )
        )
    return out


def networkd_snippet(uplink: str, bridge: str, dhcp: bool, mac: str | None) -> str:
    addressing = "DHCP=ipv4" if dhcp else "Address=<the node's address>/<prefix>\nGateway=<gateway>"
    mac_line = f"\nMACAddress={mac}" if mac else ""
    return (
        f"# /etc/systemd/network/10-{bridge}.netdev\n[NetDev]\nName={bridge}\nKind=bridge"
        f"{mac_line}\n[Bridge]\nSTP=no\nForwardDelaySec=0\n\n"
        f"# /etc/systemd/network/10-{uplink}.network\n[Match]\nName={uplink}\n[Network]\n"
        f"Bridge={bridge}\n\n"
        f"# /etc/systemd/network/10-{bridge}.network\n[Match]\nName={bridge}\n[Network]\n"
        f"{addressing}"
    )


def _networkd(cfg: ConfigText, uplink: str, bridge: str, mac: str | None) -> list[tuple[str, str]]:
    entries = parse_ini(cfg.text)
    names = [v for s, k, v in entries if s == "Match" and k == "Name"]
    macs = [
        v.lower()
        for s, k, v in entries
        if s == "Match" and k in ("MACAddress", "PermanentMACAddress")
    ]
    matched = any(_names_match(n, uplink) for n in names) or bool(
        mac and mac.lower() in " ".join(macs)
    )
    if not matched:
        return []
    network = {k: v for s, k, v in entries if s == "Network"}
    if network.get("Bridge") == bridge:
        return []
    if network.get("Bridge"):
        return [
            (
                f"{cfg.path} bridges {uplink} into {network['Bridge']!r}, but the plugin uses "
                f"{bridge!r}",
                f'Set "bridge": "{network["Bridge"]}" in the network config, or change '
                f"Bridge= in {cfg.path} to {bridge}.",
            )
        ]
    addressing = [
        k
        for s, k, v in entries
        if s in ("Network", "Address", "Route") and k in ("DHCP", "Address", "Gateway")
    ]
    if not addressing and not any(s in ("Address", "Route") for s, _, _ in entries):
        return []
    dhcp = network.get("DHCP", "no").lower() in ("yes", "ipv4", "true", "both")
    return [
        (
            f"{cfg.path} configures {uplink} itself ({', '.join(sorted(set(addressing))) or 'addresses'}): "
            f"systemd-networkd puts the node's address back on {uplink} when it restarts or "
            "the link flaps, and fights the plugin's bridge",
            f"Make networkd build the bridge and enslave {uplink} (replace {cfg.path}):\n"
            f"{networkd_snippet(uplink, bridge, dhcp, mac)}\nthen `networkctl reload` at a quiet moment.",
        )
    ]


def nm_snippet(uplink: str, bridge: str) -> str:
    return (
        f"nmcli con add type bridge ifname {bridge} con-name {bridge} bridge.stp no "
        f"bridge.forward-delay 0 ipv4.method auto\n"
        f"nmcli con add type bridge-slave ifname {uplink} master {bridge}\n"
        f"nmcli con up {bridge}"
    )


def _nm(cfg: ConfigText, uplink: str, bridge: str, mac: str | None) -> list[tuple[str, str]]:
    entries = parse_ini(cfg.text)
    conn = {k: v for s, k, v in entries if s == "connection"}
    eth_mac = next((v for s, k, v in entries if s == "ethernet" and k == "mac-address"), "")
    if conn.get("interface-name") != uplink and not (mac and eth_mac.lower() == mac.lower()):
        return []
    master = conn.get("master") or conn.get("controller")
    port_type = conn.get("slave-type") or conn.get("port-type")
    if master and port_type == "bridge":
        return []  # a port of an NM bridge: the bridge check decides whether it is ours
    methods = {s: v for s, k, v in entries if k == "method" and s in ("ipv4", "ipv6")}
    if methods.get("ipv4", "auto") == "disabled" and methods.get("ipv6", "auto") in (
        "disabled",
        "ignore",
    ):
        return []
    name = conn.get("id", cfg.path)
    return [
        (
            f"{cfg.path} (NetworkManager connection {name!r}) configures {uplink} itself "
            f"(ipv4.method {methods.get('ipv4', 'auto')}): NetworkManager re-activates it and "
            f"fights the plugin's bridge",
            "Let NetworkManager own the bridge and enslave the uplink:\n"
            f"{nm_snippet(uplink, bridge)}\nnmcli con delete {name!r}   # the old profile\n"
            "Or make NetworkManager leave both alone: /etc/NetworkManager/conf.d/99-cni-bridge-dhcp.conf\n"
            f"[keyfile]\nunmanaged-devices=interface-name:{uplink};interface-name:{bridge};interface-name:veth*",
        )
    ]


def _ifupdown(cfg: ConfigText, uplink: str, bridge: str, mac: str | None) -> list[tuple[str, str]]:
    stanzas: dict[str, tuple[str, list[str]]] = {}
    current = ""
    for raw in cfg.text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "iface" and len(words) >= 4:
            current = words[1]
            stanzas[current] = (words[3], [])
        elif words[0] in ("auto", "allow-hotplug", "source", "source-directory", "mapping"):
            current = ""
        elif current:
            stanzas[current][1].append(" ".join(words))
    if uplink not in stanzas:
        return []
    for name, (_, opts) in stanzas.items():
        for opt in opts:
            key, _, value = opt.partition(" ")
            if (
                key in ("bridge_ports", "bridge-ports")
                and uplink in value.split()
                and name == bridge
            ):
                return []
    method = stanzas[uplink][0]
    if method in ("manual",):
        return []
    return [
        (
            f"{cfg.path} configures {uplink} itself (inet {method}): ifup/ifdown and the DHCP "
            "client it starts put the node's address back on it",
            f"Replace the {uplink} stanza with:\niface {uplink} inet manual\n\nauto {bridge}\n"
            f"iface {bridge} inet {method}\n    bridge_ports {uplink}\n    bridge_stp off\n"
            "    bridge_fd 0",
        )
    ]


_MANAGER_PARSERS = {"netplan": _netplan, "networkd": _networkd, "nm": _nm, "ifupdown": _ifupdown}


def check_network_managers(
    configs: Sequence[ConfigText], uplink: str, bridge: str, uplink_mac: str | None
) -> list[Finding]:
    findings = [
        bad(NET_MANAGER, problem, fix)
        for cfg in configs
        for problem, fix in _MANAGER_PARSERS[cfg.kind](cfg, uplink, bridge, uplink_mac)
    ]
    if not findings:
        findings.append(
            ok(NET_MANAGER, f"{len(configs)} network config file(s) read; none manages {uplink}")
        )
    return findings


# ============================================================================ DHCP probe


@dataclass(frozen=True)
class Offer:
    server: str
    address: str
    router: str | None


@dataclass
class ProbeResult:
    via: str  # "veth on cni0", "macvlan on eth0"
    timeout: float
    offers: list[Offer] = field(default_factory=list)
    error: str = ""


def check_dhcp_probe(probe: ProbeResult | None) -> list[Finding]:
    if probe is None:
        return [ok(DHCP_SERVER, "not probed (pass --probe-dhcp)")]
    if probe.error:
        return [
            bad(
                DHCP_SERVER,
                f"the DHCP probe could not run ({probe.error})",
                "Run doctor as root in the node's network namespace; the probe needs the "
                "bridge (or the uplink) to exist.",
            )
        ]
    if not probe.offers:
        return [
            bad(
                DHCP_SERVER,
                f"no DHCP server answered a DISCOVER sent {probe.via} within "
                f"{probe.timeout:g} s: new pods cannot get addresses",
                "Check that the LAN's DHCP server runs and serves this segment (its log shows "
                "the DISCOVER if it arrives). The uplink must be a port of the bridge (uplink "
                "check). Servers that answer only known MAC addresses need reservations (or "
                "ipam.stableMac for stable pod MACs); a server on another subnet needs a DHCP "
                "relay. dnsmasq pings an address ~3 s before offering it: raise --probe-timeout.",
            )
        ]
    servers = sorted({o.server for o in probe.offers})
    findings = []
    if len(servers) > 1:
        findings.append(
            bad(
                DHCP_SERVER,
                f"{len(servers)} DHCP servers answered ({', '.join(servers)}): pods get "
                "addresses from whichever is fastest",
                "Stop the rogue server, or list the right one in ipam.serverAllowList.",
            )
        )
    else:
        offer = probe.offers[0]
        findings.append(
            ok(
                DHCP_SERVER,
                f"{offer.server} offered {offer.address}"
                + (f" (router {offer.router})" if offer.router else "")
                + f" to a probe {probe.via}",
            )
        )
    return findings


# ============================================================================ state


@dataclass(frozen=True)
class AttachmentFacts:
    key: str
    label: str
    state: str
    netns: str
    netns_inode: int
    current_inode: int | None  # None: the path no longer exists
    created: float


@dataclass(frozen=True)
class JournalFacts:
    phase: str
    uplink: str
    bridge: str
    last_step: str
    belongs_here: bool
    lock_held: bool  # another process holds the takeover lock right now
    updated_at: float


@dataclass(frozen=True)
class LeaseRecordFacts:
    key: str
    address: str


PENDING_GRACE = 600.0  # an ADD that has been "pending" this long is not still running


def check_state(
    state_dir: str,
    attachments: Sequence[AttachmentFacts],
    journal: JournalFacts | None,
    lease_records: Sequence[LeaseRecordFacts],
    now: float,
) -> list[Finding]:
    findings: list[Finding] = []
    for att in attachments:
        if att.current_inode is None or att.current_inode != att.netns_inode:
            why = "no longer exists" if att.current_inode is None else "is another namespace now"
            findings.append(
                bad(
                    STATE,
                    f"stale attachment {att.label}: its network namespace {att.netns} {why}, "
                    "but the agent still keeps its record (and its lease, firewall rules)",
                    "The runtime never sent DEL for it (kubelet or runtime crash, a forced "
                    "pod deletion, a DEL while the agent was down). The agent cleans it up at "
                    "its next start (the lease is released from the node, the rules and the "
                    "record go); to do it now: run the plugin with CNI_COMMAND=DEL "
                    f"CNI_CONTAINERID={att.key.split('/')[1]} CNI_IFNAME={att.key.split('/')[-1]} "
                    "CNI_NETNS= CNI_PATH=/opt/cni/bin and the network config on stdin (a DEL "
                    "whose netns is gone still sends the DHCPRELEASE, from the node, and "
                    "removes the rules and the record).",
                )
            )
        elif att.state == "pending" and now - att.created > PENDING_GRACE:
            findings.append(
                bad(
                    STATE,
                    f"attachment {att.label} has been pending for {int(now - att.created)} s: "
                    "an ADD was interrupted",
                    "Restart the agent: at start-up it tears down interrupted ADDs, and the "
                    "runtime retries the pod.",
                )
            )
    keys = {a.key for a in attachments}
    for rec in lease_records:
        if rec.key not in keys:
            findings.append(
                bad(
                    STATE,
                    f"lease record {rec.key} ({rec.address}) has no attachment: the agent "
                    "renews a lease no pod uses",
                    "Restart the agent (at start-up it releases, from the node, the leases "
                    "whose pod is gone) or send DEL for that container as above.",
                )
            )
    if journal is not None:
        if journal.phase in ("in_progress", "rolling_back", "restoring") and not journal.lock_held:
            findings.append(
                bad(
                    STATE,
                    f"the uplink takeover of {journal.uplink} into {journal.bridge} was "
                    f"interrupted (phase {journal.phase}, last step {journal.last_step}): the "
                    "node's network may be half-moved",
                    "Start (or restart) the agent: it rolls the uplink back to its snapshot "
                    "before anything else; or run `cni-bridge-dhcp uplink restore` now. "
                    f"The snapshot is in {state_dir}/uplink.json.",
                )
            )
        elif not journal.belongs_here and journal.phase in ("done", "in_progress"):
            findings.append(
                bad(
                    STATE,
                    f"the uplink journal in {state_dir} is from another boot or network namespace",
                    "Restart the agent: it archives the old journal and takes the uplink over "
                    "afresh at the next pod ADD.",
                )
            )
    if not findings:
        findings.append(
            ok(
                STATE,
                f"{len(attachments)} attachment record(s), all with live namespaces; uplink "
                f"journal {journal.phase if journal else 'absent'}",
            )
        )
    return findings


# ============================================================================ server leases


@dataclass(frozen=True)
class ServerLease:
    ip: str
    mac: str
    state: str  # binding state: active, free, backup, abandoned, expired ...
    ends: float | None  # epoch seconds; None: never
    uid: bytes | None
    hostname: str = ""

    def active(self, now: float) -> bool:
        return self.state == "active" and (self.ends is None or self.ends > now)


@dataclass(frozen=True)
class PodLease:
    label: str
    address: str
    mac: str
    client_id: bytes | None


OUR_CLIENT_ID_PREFIXES = (b"\x00k8s:", b"\x00cni:", b"\x00sha256:")


def decode_dhcpd_uid(value: str) -> bytes | None:
    """``uid "\\000k8s:..."`` (C string with octal escapes) or ``uid 01:aa:...`` (hex)."""
    value = value.strip()
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        body, out, i = value[1:-1], bytearray(), 0
        while i < len(body):
            c = body[i]
            if c == "\\" and i + 1 < len(body):
                octal = re.match(r"[0-7]{1,3}", body[i + 1 :])
                if octal:
                    out.append(int(octal.group(0), 8) & 0xFF)
                    i += 1 + len(octal.group(0))
                    continue
                out += body[i + 1].encode()
                i += 2
                continue
            out += c.encode()
            i += 1
        return bytes(out)
    try:
        return bytes(int(part, 16) for part in value.split(":"))
    except ValueError:
        return None


def last_per_address(leases: Iterable[ServerLease]) -> dict[str, ServerLease]:
    """dhcpd appends to its journal: the last entry for an address is the current one."""
    out: dict[str, ServerLease] = {}
    for lease in leases:
        out[lease.ip] = lease
    return out


def check_server_leases(
    path: str | None,
    server: Mapping[str, ServerLease] | None,
    pods: Sequence[PodLease],
    now: float,
    shared_lan: bool,
    error: str = "",
) -> list[Finding]:
    if path is None:
        return [ok(SERVER_LEASES, "not checked (pass --server-leases FILE)")]
    if server is None:
        return [
            bad(
                SERVER_LEASES,
                f"cannot read the server's lease file {path} ({error})",
                "Pass the ISC dhcpd lease file (e.g. /var/lib/dhcp/dhcpd.leases) from the DHCP "
                "server, copied here if the server is another host.",
            )
        ]
    findings: list[Finding] = []
    held = {p.address for p in pods}
    for pod in pods:
        entry = server.get(pod.address)
        if entry is None:
            what = "has no record of it"
        elif not entry.active(now):
            what = f"has it as {entry.state if entry.state != 'active' else 'expired'}"
        elif entry.mac.lower() != pod.mac.lower() and (
            pod.client_id is None or entry.uid != pod.client_id
        ):
            what = f"gave it to another client ({entry.mac})"
        else:
            continue
        findings.append(
            bad(
                SERVER_LEASES,
                f"{pod.label} holds {pod.address}, but the server {what}: it may hand the "
                "address to another host (duplicate address)",
                "The server lost or never stored this lease (restarted without its lease file, "
                "failover peer, or a different server answered: probe with --probe-dhcp). The "
                "agent's next renewal re-registers it if the address is free and is NAKed "
                "otherwise, which gives the pod a new address; to act now, recreate the pod.",
            )
        )
    if not shared_lan:
        for ip, entry in sorted(server.items()):
            if not entry.active(now) or ip in held:
                continue
            if entry.uid is None or not entry.uid.startswith(OUR_CLIENT_ID_PREFIXES):
                continue
            ident = entry.uid[1:].decode(errors="replace")
            findings.append(
                bad(
                    SERVER_LEASES,
                    f"the server has {ip} active for pod identity {ident!r} ({entry.mac}), "
                    "but no pod on this node holds it: the pool leaks until it expires",
                    "A pod was removed without a DHCPRELEASE reaching the server (agent state "
                    "lost, node crash). It frees itself at expiry; to free it now, delete it "
                    "on the server (ISC: `omshell`, or stop dhcpd, remove the lease from "
                    "dhcpd.leases, start it). If other nodes share this LAN, their pods show "
                    "up here too: pass --shared-lan.",
                )
            )
    if not findings:
        findings.append(ok(SERVER_LEASES, f"{len(pods)} pod lease(s) agree with {path}"))
    return findings


# ============================================================================ output


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


def global_addresses(addr_info: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    out = []
    for a in addr_info:
        if a.get("scope") == "global" and a.get("local"):
            out.append(f"{a['local']}/{a.get('prefixlen')}")
    return tuple(out)


def families_of(ips: Iterable[str]) -> frozenset[int]:
    fams = set()
    for ip in ips:
        try:
            fams.add(ipaddress.ip_interface(ip).version)
        except ValueError:
            continue
    return frozenset(fams)
