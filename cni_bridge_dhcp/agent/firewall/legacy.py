"""The ``iptables`` backend: legacy xtables through python-iptables (libiptc).

python-iptables quirks designed around:

- It is imported lazily, only when this backend is used (see ``iptc_loader``).
- libiptc ignores ``/run/xtables.lock`` and a commit replaces the whole table, so every
  session holds the lock from ``refresh()`` (read) to ``commit()``.
- ``Table`` objects are process-wide singletons, created with autocommit on; we switch
  autocommit off and ``refresh()`` before every read, so a failed change is discarded.
- Building or decoding a rule that jumps to a user chain makes python-iptables open every
  table of the family to find that chain, and opening a legacy table *instantiates* it in
  the kernel. We pre-seed its table-availability cache from ``/proc/net/ip*_tables_names``
  so it only looks at tables that already exist (a nat table is created only for ipMasq).
- python-iptables cannot write ebtables or nftables, so macspoofchk uses our nftables
  bridge-family table on this backend too (an ebtables-legacy binary is not even
  installed on current Debian; ``ebtables`` there is ebtables-nft, i.e. the same family).
"""

from __future__ import annotations

import ctypes
import logging
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from .base import PlacesBackend
from .libnft import ensure_process_netns
from .model import FORWARD_CHAIN
from .plan import Op, Place, TableAccess, TableState, mutex
from .restore import RestoreTable
from .rules import XRule, norm_ctstate, norm_net
from .xtlock import xtables_lock

log = logging.getLogger(__name__)

_NAMES = {4: "/proc/net/ip_tables_names", 6: "/proc/net/ip6_tables_names"}
_HOOKS = {"filter": "FORWARD", "nat": "POSTROUTING"}
_ANY = ("0.0.0.0/0.0.0.0", "0.0.0.0/0", "::/0", None, "")


def existing_tables(family: int) -> set[str]:
    """Legacy tables that exist in this namespace; reading this creates none."""
    try:
        with open(_NAMES[family]) as fh:
            return set(fh.read().split())
    except OSError:
        return set()


class LegacyTable:
    def __init__(self, iptc: types.ModuleType, family: int, table: str) -> None:
        self._iptc = iptc
        self.family = family
        self.table = table
        self.hook = _HOOKS[table]
        self.label = f"{'ip' if family == 4 else 'ip6'}tables-legacy {table}"
        self._raw: dict[str, list[tuple[XRule, Any]]] = {}
        self._fresh = False  # read() refreshed the handle in this session

    def _handle(self) -> Any:
        cls = self._iptc.Table if self.family == 4 else self._iptc.Table6
        return cls(self.table, autocommit=False)

    def transaction(self) -> AbstractContextManager[object]:
        # libiptc commits replace the whole table: hold the lock from refresh to commit.
        return xtables_lock()

    def read(self, focus: str | None = None) -> TableState | None:
        if self.table not in existing_tables(self.family):
            return None
        handle = self._handle()
        handle.refresh()
        self._fresh = True
        state = TableState()
        self._raw = {}
        for chain in handle.chains:
            # decoding rules is python-iptables' slow part: only the chains a plan looks at
            if chain.name not in (self.hook, FORWARD_CHAIN, focus):
                continue
            pairs = [(_decode(r), r) for r in chain.rules]
            self._raw[chain.name] = pairs
            state.chains[chain.name] = [x for x, _ in pairs]
        return state

    def apply(self, ops: Sequence[Op]) -> None:
        iptc = self._iptc
        handle = self._handle()
        cache = (
            iptc.Table.existing_table_names
            if self.family == 4
            else iptc.Table6.existing_table_names
        )
        cache[self.table] = True
        if not self._fresh:
            handle.refresh()
        self._fresh = False
        try:
            for op in ops:
                if op.verb == "new_chain":
                    handle.create_chain(op.chain)
                elif op.verb == "flush":
                    iptc.Chain(handle, op.chain).flush()
                    self._raw[op.chain] = []
                elif op.verb == "delete_chain":
                    handle.delete_chain(op.chain)
                elif op.verb in ("insert", "append") and op.rule is not None:
                    chain = iptc.Chain(handle, op.chain)
                    rule = to_iptc(iptc, self.family, op.rule)
                    # keep the positions _delete may fall back on in step with the handle
                    pairs = self._raw.setdefault(op.chain, [])
                    if op.verb == "insert":
                        chain.insert_rule(rule)
                        pairs.insert(0, (op.rule, rule))
                    else:
                        chain.append_rule(rule)
                        pairs.append((op.rule, rule))
                elif op.verb == "delete" and op.rule is not None:
                    self._delete(handle, op.chain, op.rule)
                # ensure_base: opening the handle created the table; drop_table: impossible
            handle.commit()
        except Exception:
            handle.refresh()  # autocommit is off: this discards the half-made changes
            raise

    def _delete(self, handle: Any, chain_name: str, rule: XRule) -> None:
        pairs = self._raw.get(chain_name, [])
        for i, (xr, raw) in enumerate(pairs):
            if xr == rule:
                try:
                    self._iptc.Chain(handle, chain_name).delete_rule(raw)
                except self._iptc.IPTCError:
                    # python-iptables cannot rebuild some rules it decoded (a comment it
                    # stored escaped, e.g. ``a\\'b``). The handle holds the table as read under
                    # the xtables lock, so the rule's position is still exact.
                    _delete_num(handle, chain_name, i)
                del pairs[i]
                return
        raise LookupError(f"rule not found in {chain_name}: {rule.comment}")


def _delete_num(handle: Any, chain: str, index: int) -> None:
    lib = handle._iptc  # python-iptables binds iptc_/ip6tc_delete_num_entry under this name
    if lib.iptc_delete_num_entry(chain.encode(), ctypes.c_uint(index), handle._handle) != 1:
        raise LookupError(f"cannot delete rule {index + 1} of {chain}: {handle.strerror()}")


def _decode(rule: Any) -> XRule:
    try:
        return from_iptc(rule)
    except Exception:  # an extension python-iptables cannot decode: not one of ours
        return XRule(target="", extra=True)


def to_iptc(iptc: types.ModuleType, family: int, x: XRule) -> Any:
    rule = iptc.Rule() if family == 4 else iptc.Rule6()
    if x.extra or x.ether_src_ne:
        raise ValueError(f"not an iptables rule: {x}")
    if x.src:
        rule.src = x.src
    if x.dst:
        rule.dst = x.dst
    if x.iif:
        rule.in_interface = x.iif
    if x.oif:
        rule.out_interface = x.oif
    if x.ctstate:
        match = rule.create_match("conntrack")
        match.ctstate = x.ctstate
    if x.comment:
        match = rule.create_match("comment")
        match.comment = x.comment
    rule.target = iptc.Target(rule, x.target)
    return rule


def from_iptc(rule: Any) -> XRule:
    extra = False
    fields: dict[str, Any] = {}
    for attr, key in (("src", "src"), ("dst", "dst")):
        value = getattr(rule, attr)
        if value in _ANY:
            continue
        if str(value).startswith("!"):
            extra = True
            continue
        fields[key] = norm_net(value)
    for attr, key in (("in_interface", "iif"), ("out_interface", "oif")):
        value = getattr(rule, attr)
        if not value:
            continue
        if str(value).startswith("!"):
            extra = True
            continue
        fields[key] = value
    if rule.protocol not in (None, "", "ip", "all", "0"):
        extra = True
    for match in rule.matches:
        params = match.get_all_parameters()
        if match.name == "comment" and list(params) == ["comment"]:
            fields["comment"] = params["comment"][0]
        elif match.name == "conntrack" and list(params) == ["ctstate"]:
            fields["ctstate"] = norm_ctstate(params["ctstate"][0])
        else:
            extra = True
    target = rule.target.name if rule.target is not None else ""
    if rule.target is not None and getattr(rule.target, "goto", False):
        extra = True
    return XRule(target=target, extra=extra, **fields)


class IptablesBackend(PlacesBackend):
    name = "iptables"

    def __init__(self, bridge_place: Callable[[], Place | None] | None = None) -> None:
        from . import iptc_loader

        self._iptc = iptc_loader.load()
        # A callable returning the nftables bridge-family place for macspoofchk (or None).
        self._bridge_place = bridge_place
        self._tables: list[tuple[TableAccess, str, tuple[str, ...], int, bool]] = [
            (LegacyTable(self._iptc, 4, "filter"), "filter", ("FORWARD",), 4, False),
            (LegacyTable(self._iptc, 6, "filter"), "filter", ("FORWARD",), 6, False),
            (LegacyTable(self._iptc, 4, "nat"), "nat", ("POSTROUTING",), 4, True),
            # python-iptables can use MASQUERADE for one family per process: see restore.py
            (
                RestoreTable(
                    "ip6tables-legacy", "nat", "POSTROUTING", lambda: "nat" in existing_tables(6)
                ),
                "nat",
                ("POSTROUTING",),
                6,
                True,
            ),
        ]

    def _preseed(self) -> None:
        for family, cls in ((4, self._iptc.Table), (6, self._iptc.Table6)):
            present = existing_tables(family)
            cache = cls.existing_table_names
            cache.clear()
            cache.update({name: name in present for name in cls.ALL})

    @contextmanager
    def _session(self) -> Iterator[list[Place]]:
        ensure_process_netns()
        with mutex:
            self._preseed()
            places = [
                Place(access, kind, hooks, frozenset({fam}), create=create)  # type: ignore[arg-type]
                for access, kind, hooks, fam, create in self._tables
            ]
            extra = self._bridge_place() if self._bridge_place is not None else None
            if extra is not None:
                places.append(extra)
            yield places
