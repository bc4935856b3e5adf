"""Backend-neutral planning: what the plugin wants in a table, and the edits to get there.

A *place* is one table the plugin writes to: a filter table whose forward hook it must
open (iptables-legacy, iptables-nft or a native nftables table that can drop forwarded
traffic), its own nat table (ipMasq) or its own bridge-family table (macspoofchk). The
same rules are planned for all of them; small table accessors read a table into a
``TableState`` and apply a list of ``Op`` atomically.

Layout of a filter place::

    <hook chain>  (FORWARD, or a native table's forward base chains)
        [top] jump CBD-FORWARD            "cni-bridge-dhcp: forward"
    CBD-FORWARD
        iif <br> oif <br> accept          "cni-bridge-dhcp: bridge <br>"   (one per bridge)
        jump CBD-<hash>                   "cni-bridge-dhcp: <net> <cid> <if>"  (one per pod)
    CBD-<hash>
        iif <br> saddr <ip> accept        routed traffic from the pod
        oif <br> daddr <ip> ct state established,related accept   its return traffic

nat (ipMasq, reference semantics)::

    <postrouting>  saddr <ip> jump CBD-<hash>
    CBD-<hash>     daddr <pod subnet> return; daddr <multicast> return; masquerade

bridge family (macspoofchk, portIsolation)::

    <prerouting>   iifname <host veth> jump CBD-<hash>
    <output>       oifname <host veth> jump CBD-<hash>       (portIsolation)
    CBD-<hash>     ether saddr != <pod mac> drop
                   iifname <host veth> meta mark set mark | 0x2000       (portIsolation)
                   oifname <host veth> meta mark & 0x2000 == 0x2000 drop (portIsolation)
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from .model import (
    CHAIN_PREFIX,
    COMMENT_PREFIX,
    FORWARD_CHAIN,
    FORWARD_COMMENT,
    ISOLATION_MARK,
    PodRules,
    bridge_comment,
    comment_matches_network,
    is_ours,
    legacy_bridge_comment,
    short,
)
from .rules import MULTICAST, XRule

Kind = Literal["filter", "nat", "bridge"]

# One mutex for every read-plan-apply cycle in the process: the libraries are not
# thread-safe and a plan is only valid against the state it was computed from.
mutex = threading.RLock()


@dataclass
class TableState:
    """Rules by chain, in order. Only hook chains and chains named CBD-* are listed."""

    chains: dict[str, list[XRule]] = field(default_factory=dict)


@dataclass(frozen=True)
class Op:
    verb: Literal[
        "ensure_base",
        "new_chain",
        "flush",
        "delete_chain",
        "insert",
        "append",
        "delete",
        "drop_table",
    ]
    chain: str = ""
    rule: XRule | None = None


class TableAccess(Protocol):
    label: str  # for names and errors, e.g. "iptables-legacy filter"

    def transaction(self) -> AbstractContextManager[object]: ...  # held from read to apply
    # None: the table does not exist. ``focus``: the one pod chain the caller needs besides the
    # hook and shared chains (accessors may skip decoding other CBD-* chains).
    def read(self, focus: str | None = None) -> TableState | None: ...
    def apply(self, ops: Sequence[Op]) -> None: ...


@dataclass
class Place:
    access: TableAccess
    kind: Kind
    hooks: tuple[str, ...]
    families: frozenset[int]
    create: bool = False  # may create the table / hook chain when something is needed
    drop_when_empty: bool = False  # our own nftables table: delete it once it holds nothing

    @property
    def label(self) -> str:
        return self.access.label


@dataclass
class Desired:
    entries: list[tuple[str, XRule]] = field(default_factory=list)  # in shared/hook chains
    chains: dict[str, list[XRule]] = field(default_factory=dict)  # owned, exact content


# --------------------------------------------------------------------------- desired state


def forward_entry() -> XRule:
    return XRule(target=FORWARD_CHAIN, comment=FORWARD_COMMENT)


def bridge_rule(bridge: str) -> XRule:
    return XRule(target="ACCEPT", comment=bridge_comment(bridge), iif=bridge, oif=bridge)


def pod_desired(place: Place, pod: PodRules) -> Desired | None:
    """What ``pod`` needs in ``place``; None if nothing."""
    addrs = [ip for ip in pod.ips if ip.version in place.families]
    chain = pod.chain
    if place.kind == "filter":
        if not addrs:
            return None
        rules: list[XRule] = []
        for ip in addrs:
            host = f"{ip.ip}/{ip.max_prefixlen}"
            rules.append(
                XRule("ACCEPT", f"{COMMENT_PREFIX} from {ip.ip}", iif=pod.bridge, src=host)
            )
            rules.append(
                XRule(
                    "ACCEPT",
                    f"{COMMENT_PREFIX} to {ip.ip}",
                    oif=pod.bridge,
                    dst=host,
                    ctstate="ESTABLISHED,RELATED",
                )
            )
        entry = XRule(target=chain, comment=pod.comment)
        return Desired(entries=[(FORWARD_CHAIN, entry)], chains={chain: rules})
    if place.kind == "nat":
        if not pod.ip_masq or not addrs:
            return None
        rules = [
            XRule("RETURN", f"{COMMENT_PREFIX} local {ip.network}", dst=str(ip.network))
            for ip in addrs
        ]
        for version in sorted({ip.version for ip in addrs}):
            rules.append(
                XRule("RETURN", f"{COMMENT_PREFIX} multicast v{version}", dst=MULTICAST[version])
            )
        rules.append(XRule("MASQUERADE", f"{COMMENT_PREFIX} masquerade"))
        hook = place.hooks[0]
        entries = [
            (hook, XRule(target=chain, comment=pod.comment, src=f"{ip.ip}/{ip.max_prefixlen}"))
            for ip in addrs
        ]
        return Desired(entries=entries, chains={chain: rules})
    # bridge family
    if not pod.macspoofchk and not pod.isolated:
        return None
    mac = pod.mac.lower()
    veth = pod.host_veth
    entry = XRule(target=chain, comment=pod.comment, iif=veth)
    if not pod.isolated:
        rule = XRule("DROP", f"{COMMENT_PREFIX} macspoofchk {mac}", ether_src_ne=mac)
        return Desired(entries=[(place.hooks[0], entry)], chains={chain: [rule]})
    # portIsolation: the kernel stops frames between isolated ports, but not the node's
    # routing (pod A -> node -> pod B). Frames in from this port get a mark; frames the node
    # sends out to this port that carry it (routed from another isolated pod) are dropped.
    # The chain is entered from prerouting (iif) and output (oif): each rule names its way.
    rules = []
    if pod.macspoofchk:
        rules.append(
            XRule("DROP", f"{COMMENT_PREFIX} macspoofchk {mac}", iif=veth, ether_src_ne=mac)
        )
    rules.append(XRule("CONTINUE", f"{COMMENT_PREFIX} isolated", iif=veth, mark_set=ISOLATION_MARK))
    rules.append(XRule("DROP", f"{COMMENT_PREFIX} isolated", oif=veth, mark_has=ISOLATION_MARK))
    out_entry = XRule(target=chain, comment=pod.comment, oif=veth)
    entries = [(place.hooks[0], entry), (place.hooks[1], out_entry)]
    return Desired(entries=entries, chains={chain: rules})


def bridge_desired(place: Place, bridge: str) -> Desired | None:
    if place.kind != "filter":
        return None
    return Desired(entries=[(FORWARD_CHAIN, bridge_rule(bridge))])


# --------------------------------------------------------------------------- planning


def _name(place: Place, chain: str, rule: XRule | None = None) -> str:
    if rule is None:
        return f"{place.label} chain {chain}"
    where = f" (from {rule.src})" if rule.src and rule.is_jump() else ""
    return f"{place.label} {chain}: {short(rule.comment)}{where}"


def plan_ensure(
    place: Place, want: Desired, state: TableState | None
) -> tuple[list[Op], list[str]]:
    """Edits that make ``want`` present (and the shared chain/hook jumps), plus their names."""
    ops: list[Op] = []
    made: list[str] = []
    chains = {} if state is None else state.chains
    if state is None or any(h not in chains for h in place.hooks):
        ops.append(Op("ensure_base"))
        made.append(f"{place.label} base chain")
    if place.kind == "filter" and FORWARD_CHAIN not in chains:
        ops.append(Op("new_chain", FORWARD_CHAIN))
        made.append(_name(place, FORWARD_CHAIN))
    for chain, rules in want.chains.items():
        cur = chains.get(chain)
        if cur == rules:
            continue
        if cur is None:
            ops.append(Op("new_chain", chain))
            made.append(_name(place, chain))
        else:
            ops.append(Op("flush", chain))
        for rule in rules:
            ops.append(Op("append", chain, rule))
        missing = [_name(place, chain, r) for r in rules if cur is None or r not in cur]
        made.extend(missing or [f"{place.label} {chain}: unexpected rules"])
    for chain, rule in want.entries:
        if rule not in chains.get(chain, []):
            ops += [Op("delete", chain, old) for old in twins(chains.get(chain, []), rule)]
            ops.append(Op("append", chain, rule))
            made.append(_name(place, chain, rule))
    if place.kind == "filter":
        for hook in place.hooks:
            if forward_entry() not in chains.get(hook, []):
                ops += [
                    Op("delete", hook, old) for old in twins(chains.get(hook, []), forward_entry())
                ]
                ops.append(Op("insert", hook, forward_entry()))
                made.append(_name(place, hook, forward_entry()))
    return ops, made


def twins(rules: Sequence[XRule], rule: XRule) -> list[XRule]:
    """Our rules that do ``rule``'s job but do not compare equal to it.

    A rule written by an older version (another comment format), or one whose comment a
    tool reads back differently, is replaced rather than joined by a duplicate: adding
    never grows a chain, even when what we wrote cannot be read back identically.
    """
    job = replace(rule, comment=None)
    return [
        r for r in rules if r != rule and is_ours(r.comment) and replace(r, comment=None) == job
    ]


def plan_check(place: Place, want: Desired, state: TableState | None) -> list[str]:
    _, made = plan_ensure(place, want, state)
    return made


def plan_remove_pod(place: Place, chain: str, state: TableState | None) -> list[Op]:
    if state is None:
        return []
    ops: list[Op] = []
    parents = (*place.hooks, FORWARD_CHAIN) if place.kind == "filter" else place.hooks
    for parent in parents:
        for rule in state.chains.get(parent, []):
            if rule.target == chain and is_ours(rule.comment):
                ops.append(Op("delete", parent, rule))
    if chain in state.chains:
        ops += [Op("flush", chain), Op("delete_chain", chain)]
    return _plan_tidy(place, state, ops)


def plan_remove_bridge(place: Place, bridge: str, state: TableState | None) -> list[Op]:
    if state is None or place.kind != "filter":
        return []
    ops = [
        Op("delete", FORWARD_CHAIN, r)
        for r in state.chains.get(FORWARD_CHAIN, [])
        if r.comment in (bridge_comment(bridge), legacy_bridge_comment(bridge))
        or r in twins([r], bridge_rule(bridge))
    ]
    return _plan_tidy(place, state, ops)


def _plan_tidy(place: Place, state: TableState, ops: list[Op]) -> list[Op]:
    """``ops``, then drop the shared chain once empty; our own table goes once empty."""
    if not ops:
        return []
    after = simulate(state, ops)
    more: list[Op] = []
    if place.kind == "filter" and FORWARD_CHAIN in after.chains and not after.chains[FORWARD_CHAIN]:
        for hook in place.hooks:
            for rule in after.chains.get(hook, []):
                if rule.target == FORWARD_CHAIN and is_ours(rule.comment):
                    more.append(Op("delete", hook, rule))
        more.append(Op("delete_chain", FORWARD_CHAIN))
        after = simulate(after, more)
    if place.drop_when_empty and _only_empty_hooks(place, after):
        return [Op("drop_table")]
    return ops + more


def _only_empty_hooks(place: Place, state: TableState) -> bool:
    return all(name in place.hooks and not rules for name, rules in state.chains.items())


def simulate(state: TableState, ops: Iterable[Op]) -> TableState:
    out = copy.deepcopy(state)
    for op in ops:
        rules = out.chains.setdefault(op.chain, []) if op.chain else []
        if op.verb == "new_chain" or op.verb == "flush":
            out.chains[op.chain] = []
        elif op.verb == "delete_chain":
            out.chains.pop(op.chain, None)
        elif op.verb == "append" and op.rule is not None:
            rules.append(op.rule)
        elif op.verb == "insert" and op.rule is not None:
            rules.insert(0, op.rule)
        elif op.verb == "delete" and op.rule in rules:
            rules.remove(op.rule)
        elif op.verb == "drop_table":
            out.chains.clear()
    return out


def pods_in(place: Place, network: str, state: TableState | None) -> set[tuple[str, str]]:
    if state is None:
        return set()
    found: set[tuple[str, str]] = set()
    parents = (*place.hooks, FORWARD_CHAIN) if place.kind == "filter" else place.hooks
    for parent in parents:
        for rule in state.chains.get(parent, []):
            if not rule.target.startswith(CHAIN_PREFIX) or rule.target == FORWARD_CHAIN:
                continue
            key = comment_matches_network(rule.comment, network, rule.target)
            if key is not None:
                found.add(key)
    return found
