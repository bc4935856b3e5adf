"""Planning against a strict in-memory table that refuses what iptables/nft would refuse."""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace

import pytest

from cni_bridge_dhcp.agent.firewall.model import FORWARD_CHAIN, PodRules
from cni_bridge_dhcp.agent.firewall.plan import (
    Op,
    Place,
    TableState,
    bridge_desired,
    plan_check,
    plan_ensure,
    plan_remove_bridge,
    plan_remove_pod,
    pod_desired,
    pods_in,
)
from cni_bridge_dhcp.agent.firewall.rules import XRule


class StrictTable:
    """Applies ops like a kernel table would, raising on anything invalid."""

    def __init__(self, chains: dict[str, list[XRule]] | None, hooks: tuple[str, ...]) -> None:
        self.chains = chains
        self.hooks = hooks
        self.label = "fake"

    def transaction(self) -> AbstractContextManager[object]:
        return nullcontext()

    def read(self, focus: str | None = None) -> TableState | None:
        return None if self.chains is None else TableState(copy.deepcopy(self.chains))

    def _referenced(self, chain: str) -> bool:
        assert self.chains is not None
        return any(r.target == chain for rules in self.chains.values() for r in rules)

    def apply(self, ops: Sequence[Op]) -> None:
        for op in ops:
            if op.verb == "ensure_base":
                self.chains = self.chains or {}
                for hook in self.hooks:
                    self.chains.setdefault(hook, [])
                continue
            if op.verb == "drop_table":
                self.chains = None
                continue
            chains = self.chains
            assert chains is not None, f"{op} on a missing table"
            if op.verb == "new_chain":
                assert op.chain not in chains, f"chain {op.chain} exists"
                chains[op.chain] = []
            elif op.verb == "flush":
                chains[op.chain] = []
            elif op.verb == "delete_chain":
                assert op.chain not in self.hooks
                assert chains[op.chain] == [], f"chain {op.chain} not empty"
                del chains[op.chain]
                assert not self._referenced(op.chain), f"chain {op.chain} still referenced"
            elif op.verb in ("append", "insert"):
                assert op.rule is not None
                if op.rule.is_jump():
                    assert op.rule.target in chains, f"jump to missing {op.rule.target}"
                if op.verb == "append":
                    chains[op.chain].append(op.rule)
                else:
                    chains[op.chain].insert(0, op.rule)
            elif op.verb == "delete":
                chains[op.chain].remove(op.rule)  # ValueError if absent


def make_pod(name: str, *ips: str, masq: bool = False, spoof: bool = False) -> PodRules:
    return PodRules(
        network="lan",
        container_id=f"{name}-cid",
        ifname="eth0",
        bridge="br0",
        host_veth=f"veth-{name}",
        mac="02:00:00:00:00:0A",
        ips=tuple(ipaddress.ip_interface(i) for i in ips),
        ip_masq=masq,
        macspoofchk=spoof,
    )


FOREIGN = XRule("ACCEPT", None, oif="docker0")


def filter_place(families: frozenset[int] = frozenset({4})) -> tuple[Place, StrictTable]:
    table = StrictTable({"FORWARD": [FOREIGN]}, ("FORWARD",))
    return Place(table, "filter", ("FORWARD",), families), table


def ensure(place: Place, want: object) -> list[str]:
    assert want is not None
    state = place.access.read()
    ops, made = plan_ensure(place, want, state)  # type: ignore[arg-type]
    place.access.apply(ops)
    return made


def apply(place: Place, ops: list[Op]) -> None:
    place.access.apply(ops)


def test_bridge_and_pods_then_removal_restores_the_table_exactly() -> None:
    place, table = filter_place()
    original = copy.deepcopy(table.chains)
    a, b = make_pod("a", "192.168.77.5/24"), make_pod("b", "192.168.77.6/24")
    ensure(place, bridge_desired(place, "br0"))
    ensure(place, pod_desired(place, a))
    ensure(place, pod_desired(place, b))
    assert table.chains is not None
    assert table.chains["FORWARD"][0].target == FORWARD_CHAIN  # at the top
    assert table.chains["FORWARD"][1] == FOREIGN
    assert pods_in(place, "lan", place.access.read()) == {("a-cid", "eth0"), ("b-cid", "eth0")}

    apply(place, plan_remove_pod(place, a.chain, place.access.read()))
    assert a.chain not in table.chains and FORWARD_CHAIN in table.chains
    apply(place, plan_remove_pod(place, b.chain, place.access.read()))
    assert FORWARD_CHAIN in table.chains  # the bridge rule still holds it
    apply(place, plan_remove_bridge(place, "br0", place.access.read()))
    assert table.chains == original


def test_ensure_is_idempotent_and_check_is_then_clean() -> None:
    place, _ = filter_place()
    pod = make_pod("a", "192.168.77.5/24")
    first = ensure(place, pod_desired(place, pod))
    assert "fake chain CBD-FORWARD" in first and "fake FORWARD: forward" in first
    ops, made = plan_ensure(place, pod_desired(place, pod), place.access.read())  # type: ignore[arg-type]
    assert ops == [] and made == []
    assert plan_check(place, pod_desired(place, pod), place.access.read()) == []  # type: ignore[arg-type]


def test_rules_removed_or_added_behind_our_back_are_named_and_repaired() -> None:
    place, table = filter_place()
    pod = make_pod("a", "192.168.77.5/24")
    ensure(place, pod_desired(place, pod))
    assert table.chains is not None
    del table.chains[pod.chain][0]
    table.chains["FORWARD"].pop(0)
    want = pod_desired(place, pod)
    assert want is not None
    missing = plan_check(place, want, place.access.read())
    assert sorted(missing) == sorted(
        ["fake FORWARD: forward", f"fake {pod.chain}: from 192.168.77.5"]
    )
    assert sorted(ensure(place, want)) == sorted(missing)
    assert plan_check(place, want, place.access.read()) == []

    table.chains[pod.chain].append(XRule("DROP"))
    assert plan_check(place, want, place.access.read()) == [f"fake {pod.chain}: unexpected rules"]
    ensure(place, want)
    assert XRule("DROP") not in table.chains[pod.chain]


def test_foreign_rules_keep_our_shared_chain_and_are_never_removed() -> None:
    place, table = filter_place()
    pod = make_pod("a", "192.168.77.5/24")
    ensure(place, pod_desired(place, pod))
    assert table.chains is not None
    table.chains[FORWARD_CHAIN].append(FOREIGN)  # someone else's rule in our chain
    apply(place, plan_remove_pod(place, pod.chain, place.access.read()))
    assert table.chains[FORWARD_CHAIN] == [FOREIGN]
    assert table.chains["FORWARD"][1:] == [FOREIGN]


def test_removing_what_is_not_there_plans_nothing() -> None:
    place, _ = filter_place()
    assert plan_remove_pod(place, "CBD-0000000000", place.access.read()) == []
    assert plan_remove_bridge(place, "br0", place.access.read()) == []
    assert plan_remove_pod(place, "CBD-0000000000", None) == []


def test_pods_only_get_rules_for_their_address_families() -> None:
    v4, _ = filter_place(frozenset({4}))
    v6, _ = filter_place(frozenset({6}))
    both, _ = filter_place(frozenset({4, 6}))
    pod = make_pod("a", "192.168.77.5/24", "fd00::5/64")
    assert [r.src for r in pod_desired(v4, pod).chains[pod.chain] if r.src] == ["192.168.77.5/32"]  # type: ignore[union-attr]
    assert [r.src for r in pod_desired(v6, pod).chains[pod.chain] if r.src] == ["fd00::5/128"]  # type: ignore[union-attr]
    assert len(pod_desired(both, pod).chains[pod.chain]) == 4  # type: ignore[union-attr]
    assert pod_desired(v6, make_pod("b", "192.168.77.6/24")) is None


def test_masquerade_follows_the_reference_semantics() -> None:
    table = StrictTable(None, ("postrouting",))
    place = Place(
        table, "nat", ("postrouting",), frozenset({4, 6}), create=True, drop_when_empty=True
    )
    pod = make_pod("a", "192.168.77.5/24", "fd00::5/64", masq=True)
    want = pod_desired(place, pod)
    assert want is not None
    assert [(r.src, r.target) for _, r in want.entries] == [
        ("192.168.77.5/32", pod.chain),
        ("fd00::5/128", pod.chain),
    ]
    assert [(r.dst, r.target) for r in want.chains[pod.chain]] == [
        ("192.168.77.0/24", "RETURN"),
        ("fd00::/64", "RETURN"),
        ("224.0.0.0/4", "RETURN"),
        ("ff00::/8", "RETURN"),
        (None, "MASQUERADE"),
    ]
    assert pod_desired(place, make_pod("b", "192.168.77.6/24")) is None  # no ipMasq
    ensure(place, want)
    assert table.chains is not None and "postrouting" in table.chains
    ops = plan_remove_pod(place, pod.chain, place.access.read())
    assert ops == [Op("drop_table")]  # our own table goes once empty


def test_macspoofchk_drops_other_source_macs_on_the_pod_port() -> None:
    table = StrictTable(None, ("prerouting",))
    place = Place(table, "bridge", ("prerouting",), frozenset({4, 6}), create=True)
    pod = make_pod("a", "192.168.77.5/24", spoof=True)
    want = pod_desired(place, pod)
    assert want is not None
    (_, entry), *_ = want.entries
    assert entry.iif == "veth-a" and entry.target == pod.chain
    assert want.chains[pod.chain] == [
        XRule(
            "DROP",
            "cni-bridge-dhcp: macspoofchk 02:00:00:00:00:0a",
            ether_src_ne="02:00:00:00:00:0a",
        )
    ]
    assert pod_desired(place, make_pod("b", "192.168.77.6/24")) is None


def test_ipv4_only_place_never_gets_an_ipv6_pod_chain() -> None:
    place, table = filter_place()
    pod = make_pod("v6only", "fd00::9/64")
    assert pod_desired(place, pod) is None
    assert table.chains == {"FORWARD": [FOREIGN]}


@pytest.mark.parametrize("network", ["lan", "other"])
def test_pods_are_listed_per_network(network: str) -> None:
    place, _ = filter_place()
    pod = make_pod("a", "192.168.77.5/24")
    ensure(place, pod_desired(place, pod))
    found = pods_in(place, network, place.access.read())
    assert found == ({("a-cid", "eth0")} if network == "lan" else set())


def test_isolated_pods_mark_their_frames_and_refuse_marked_ones() -> None:
    hooks = ("prerouting", "output")
    table = StrictTable(None, hooks)
    place = Place(table, "bridge", hooks, frozenset({4, 6}), create=True, drop_when_empty=True)
    pod = replace(make_pod("a", "192.168.77.5/24", spoof=True), isolated=True)
    want = pod_desired(place, pod)
    assert want is not None
    assert [(hook, r.iif, r.oif, r.target) for hook, r in want.entries] == [
        ("prerouting", "veth-a", None, pod.chain),
        ("output", None, "veth-a", pod.chain),
    ]
    # every rule of the shared chain names the direction it applies to
    rules = want.chains[pod.chain]
    assert all(bool(r.iif) != bool(r.oif) for r in rules)
    assert [r.target for r in rules] == ["DROP", "CONTINUE", "DROP"]
    assert rules[1].mark_set == rules[2].mark_has == 0x2000
    ensure(place, want)
    assert plan_check(place, want, table.read()) == []
    apply(place, plan_remove_pod(place, pod.chain, table.read()))
    assert table.chains is None  # our table went with its last rule


def test_a_rule_read_back_with_another_comment_is_replaced_not_duplicated() -> None:
    place, table = filter_place()
    pod = make_pod("a", "192.168.77.5/24")
    want = pod_desired(place, pod)
    assert want is not None
    ensure(place, want)
    assert table.chains is not None
    # the pod's jump as an older release wrote it (or as a tool mangled its comment)
    jumps = table.chains[FORWARD_CHAIN]
    jumps[:] = [replace(r, comment=r.comment + "\\") if r.target == pod.chain else r for r in jumps]
    for _ in range(3):
        ensure(place, want)
    assert [r.target for r in table.chains[FORWARD_CHAIN]].count(pod.chain) == 1
    assert plan_check(place, want, table.read()) == []
