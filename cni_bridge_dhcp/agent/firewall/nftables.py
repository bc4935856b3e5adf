"""The ``nftables`` backend: hosts on iptables-nft and/or native nftables.

Every base chain on the forward hook is evaluated, and a drop in any of them wins, so an
accept in a table of our own would not help. We therefore open the forward path *inside*
each table that filters it:

- iptables-nft's ``ip filter``/``ip6 filter``: written through ``ip(6)tables-nft-restore
  --noflush`` (rules in iptables' own encoding). Native nftables expressions in that table
  would make it "incompatible" and break ``iptables-nft-save`` for kube-proxy, Docker and
  the admin, so we never write them there.
- any other table with a forward filter base chain (a native ruleset, firewalld, ...):
  a ``CBD-FORWARD`` chain of ours in that table and a jump to it at the top of each of its
  forward base chains, through libnftables JSON.

ipMasq lives in ``table inet cni-bridge-dhcp`` and macspoofchk in
``table bridge cni-bridge-dhcp``; both tables are deleted once they hold nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from .base import PlacesBackend
from .libnft import JsonObj, Nft, ensure_process_netns
from .libnft import shared as shared_nft
from .model import CHAIN_PREFIX, OWN_TABLE
from .plan import Op, Place, TableState, mutex
from .restore import INCOMPATIBLE, RestoreTable
from .rules import from_nft_rule, to_nft_expr

log = logging.getLogger(__name__)

FAMILIES = {"ip": frozenset({4}), "ip6": frozenset({6}), "inet": frozenset({4, 6})}
# iptables-nft tables we leave alone: filtering belongs in `filter`.
_IPTABLES_NFT_OTHER = frozenset({"mangle", "raw", "security", "nat"})
NAT_BASE = {"name": "postrouting", "type": "nat", "hook": "postrouting", "prio": 100}
BRIDGE_BASE = {"name": "prerouting", "type": "filter", "hook": "prerouting", "prio": -300}
# frames the node itself sends into the bridge (its own, and routed ones): portIsolation
BRIDGE_OUT = {"name": "output", "type": "filter", "hook": "output", "prio": 0}


class NftTable:
    """A native nftables table, read from the ruleset, written with JSON batches.

    It reads only what it edits: our own tables whole, and in another table the forward
    base chains and our chains in it. ``list ruleset`` grows with every rule on the node:
    with a 2,000-rule table of the host's (kube-proxy's nftables mode, firewalld) it took
    98 ms of CPU, against 1.3 ms for the list of chains and 0.5 ms for one chain, and
    every ADD and DEL listed it."""

    def __init__(
        self,
        nft: Nft,
        family: str,
        table: str,
        chains: list[JsonObj],
        hooks: tuple[str, ...],
        own: bool = False,
        base: dict[str, Any] | None = None,
        more_bases: tuple[dict[str, Any], ...] = (),
    ) -> None:
        self._nft = nft
        self.family = family
        self.table = table
        self.hooks = hooks
        self.own = own
        self.base = base
        self.more_bases = more_bases
        self.label = f"nft {family} {table}"
        # Which chains the table has (``chains``: every chain of the ruleset, no rules);
        # ``apply`` keeps it up to date. The rules are listed when first read.
        self._names = chain_names(chains, family, table)
        self._items: list[JsonObj] | None = None

    def _wanted(self, name: str) -> bool:
        return self.own or name in self.hooks or name.startswith(CHAIN_PREFIX)

    def _list(self) -> list[JsonObj]:
        if self.own:
            return self._nft.list({"table": {"family": self.family, "name": self.table}})
        items: list[JsonObj] = []
        for name in self._names:
            if self._wanted(name):
                items += self._nft.list({"chain": {**self._ref(), "name": name}})
        return items

    def transaction(self) -> AbstractContextManager[object]:
        return nullcontext()

    def reload(self) -> None:
        """Read the rules again, so a read after our own write sees it. The chains are not
        listed again (~1.2 ms on a host with 200 of its own): ``apply`` tracks them."""
        self._items = None

    def read(self, focus: str | None = None) -> TableState | None:
        if not self._names:
            return None  # no such table (ours always has its base chains)
        if self._items is None:
            self._items = self._list()
        state = TableState()
        for name in self._names:
            if self._wanted(name):
                state.chains.setdefault(name, [])
        for item in self._items:
            if _is(item, "rule", self.family, self.table):
                rules = state.chains.get(str(item["rule"].get("chain")))
                if rules is not None:
                    rules.append(from_nft_rule(item["rule"]))
        return state

    def _ref(self, chain: str | None = None) -> JsonObj:
        ref: JsonObj = {"family": self.family, "table": self.table}
        if chain is not None:
            ref["chain"] = chain
        return ref

    def apply(self, ops: Sequence[Op]) -> None:
        cmds: list[JsonObj] = []
        for op in ops:
            if op.verb == "ensure_base" and self.base is not None:
                cmds.append({"add": {"table": {"family": self.family, "name": self.table}}})
                for base in (self.base, *self.more_bases):
                    chain = {"family": self.family, "table": self.table, **base, "policy": "accept"}
                    cmds.append({"add": {"chain": chain}})
            elif op.verb == "new_chain":
                cmds.append({"add": {"chain": {**self._ref(), "name": op.chain}}})
            elif op.verb == "flush":
                cmds.append({"flush": {"chain": {**self._ref(), "name": op.chain}}})
            elif op.verb == "delete_chain":
                cmds.append({"delete": {"chain": {**self._ref(), "name": op.chain}}})
            elif op.verb in ("insert", "append") and op.rule is not None:
                rule: JsonObj = {**self._ref(op.chain), "expr": to_nft_expr(op.rule)}
                if op.rule.comment:
                    rule["comment"] = op.rule.comment
                cmds.append({"insert" if op.verb == "insert" else "add": {"rule": rule}})
            elif op.verb == "delete" and op.rule is not None:
                if op.rule.handle is None:
                    raise LookupError(f"no handle for rule {op.rule.comment!r} in {op.chain}")
                ref = {**self._ref(op.chain), "handle": op.rule.handle}
                cmds.append({"delete": {"rule": ref}})
            elif op.verb == "drop_table" and self.own:
                cmds.append({"delete": {"table": {"family": self.family, "name": self.table}}})
        if cmds:
            self._nft.run(cmds)  # one batch: all of it applied, or none
            self._items = None
            for op in ops:
                if op.verb != "drop_table" or self.own:
                    self._names = _chains_after(self._names, op, self.base, self.more_bases)


def _chains_after(
    names: list[str], op: Op, base: dict[str, Any] | None, more_bases: tuple[dict[str, Any], ...]
) -> list[str]:
    """A table's chain names once ``op`` is applied."""
    if op.verb == "ensure_base" and base is not None:
        added = [str(b["name"]) for b in (base, *more_bases)]
        return names + [n for n in added if n not in names]
    if op.verb == "new_chain" and op.chain not in names:
        return [*names, op.chain]
    if op.verb == "delete_chain":
        return [n for n in names if n != op.chain]
    if op.verb == "drop_table":
        return []
    return names


def _is(item: JsonObj, kind: str, family: str, table: str) -> bool:
    obj = item.get(kind)
    if not isinstance(obj, dict) or obj.get("family") != family:
        return False
    return obj.get("name" if kind == "table" else "table") == table


def forward_chains(chains: list[JsonObj]) -> dict[tuple[str, str], list[str]]:
    """(family, table) -> names of its forward filter base chains, ours excluded."""
    out: dict[tuple[str, str], list[str]] = {}
    for item in chains:
        chain = item.get("chain")
        if not isinstance(chain, dict):
            continue
        family, table = str(chain.get("family")), str(chain.get("table"))
        if family not in FAMILIES or table == OWN_TABLE:
            continue
        if chain.get("hook") != "forward" or chain.get("type") != "filter":
            continue
        if family in ("ip", "ip6") and table in _IPTABLES_NFT_OTHER:
            continue
        out.setdefault((family, table), []).append(str(chain.get("name")))
    return out


def chain_names(chains: list[JsonObj], family: str, table: str) -> list[str]:
    """The names of ``family table``'s chains in ``chains`` (a chain list)."""
    return [str(item["chain"].get("name")) for item in chains if _is(item, "chain", family, table)]


def own_places(nft: Nft, chains: list[JsonObj]) -> list[Place]:
    nat = NftTable(nft, "inet", OWN_TABLE, chains, ("postrouting",), own=True, base=NAT_BASE)
    return [
        Place(nat, "nat", nat.hooks, FAMILIES["inet"], create=True, drop_when_empty=True),
        bridge_place(nft, chains),
    ]


def bridge_place(nft: Nft, chains: list[JsonObj]) -> Place:
    table = NftTable(
        nft,
        "bridge",
        OWN_TABLE,
        chains,
        ("prerouting", "output"),
        own=True,
        base=BRIDGE_BASE,
        more_bases=(BRIDGE_OUT,),
    )
    return Place(table, "bridge", table.hooks, frozenset({4, 6}), create=True, drop_when_empty=True)


def discover(nft: Nft, chains: list[JsonObj]) -> list[Place]:
    """Where the pods' rules go, from ``chains``: every chain of the ruleset (no rules)."""
    places: list[Place] = []
    for (family, table), hooks in sorted(forward_chains(chains).items()):
        if family in ("ip", "ip6") and table == "filter" and "FORWARD" in hooks:
            compat = RestoreTable(
                "iptables-nft" if family == "ip" else "ip6tables-nft",
                table,
                "FORWARD",
                chains=chain_names(chains, family, table),
            )
            if compat.load() != INCOMPATIBLE:
                places.append(Place(compat, "filter", ("FORWARD",), FAMILIES[family]))
                continue
            log.warning("%s %s is not iptables-nft compatible: writing native rules", family, table)
        access = NftTable(nft, family, table, chains, tuple(hooks))
        places.append(Place(access, "filter", access.hooks, FAMILIES[family]))
    return places + own_places(nft, chains)


class NftablesBackend(PlacesBackend):
    name = "nftables"

    def __init__(self, nft: Nft | None = None) -> None:
        self._nft = nft or shared_nft()

    @contextmanager
    def _session(self) -> Iterator[list[Place]]:
        ensure_process_netns()
        with mutex:
            yield discover(self._nft, self._nft.list({"chains": None}))


def legacy_bridge_place(nft: Nft | None) -> Place | None:
    """macspoofchk's place for the iptables backend (None without libnftables)."""
    if nft is None:
        return None
    return bridge_place(nft, nft.list({"chains": None}))
