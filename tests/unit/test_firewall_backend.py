"""The shared backend verbs and the facade, over in-memory tables (no root, no kernel)."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

import pytest

from cni_bridge_dhcp.agent.firewall.base import PlacesBackend
from cni_bridge_dhcp.agent.firewall.facade import Firewall
from cni_bridge_dhcp.agent.firewall.model import FirewallBackend
from cni_bridge_dhcp.agent.firewall.plan import Op, Place, TableState
from cni_bridge_dhcp.cni.errors import CNIError, ErrorCode
from tests.unit.test_firewall_plan import FOREIGN, StrictTable, make_pod


class FakeBackend(PlacesBackend):
    def __init__(self, name: str, *, with_bridge: bool = True) -> None:
        self.name = name
        self.filter = StrictTable({"FORWARD": [FOREIGN]}, ("FORWARD",))
        self.nat = StrictTable(None, ("postrouting",))
        self.bridge = StrictTable(None, ("prerouting",))
        self.places = [
            Place(self.filter, "filter", ("FORWARD",), frozenset({4, 6})),
            Place(self.nat, "nat", ("postrouting",), frozenset({4, 6}), True, True),
        ]
        if with_bridge:
            self.places.append(
                Place(self.bridge, "bridge", ("prerouting",), frozenset({4, 6}), True, True)
            )

    @contextmanager
    def _session(self) -> Iterator[list[Place]]:
        yield self.places


class Broken(StrictTable):
    def apply(self, ops: Sequence[Op]) -> None:
        raise OSError("Operation not permitted")


def facade(*backends: FirewallBackend, cleanup: Sequence[FirewallBackend] = ()) -> Firewall:
    fw = Firewall.__new__(Firewall)  # skip host detection
    fw.requested = "auto"
    fw.backends = list(backends)
    fw._cleanup = list(cleanup)
    return fw


A = make_pod("a", "192.168.77.5/24", masq=True, spoof=True)
B = make_pod("b", "192.168.77.6/24")


def test_add_is_idempotent_and_del_removes_everything_it_made() -> None:
    backend = FakeBackend("fake")
    backend.ensure_bridge("br0")
    backend.add_pod(A)
    assert backend.restore_pod(A) == []
    assert backend.check_pod(A) == []
    backend.del_pod(A.network, A.container_id, A.ifname)
    backend.del_pod(A.network, A.container_id, A.ifname)  # again: missing is fine
    backend.remove_bridge("br0")
    assert backend.filter.chains == {"FORWARD": [FOREIGN]}
    assert backend.nat.chains is None and backend.bridge.chains is None  # own tables dropped


def test_gc_keeps_listed_attachments_only() -> None:
    backend = FakeBackend("fake")
    backend.add_pod(A)
    backend.add_pod(B)
    assert backend.gc("lan", {B.key}) == [A.key]
    assert backend.pods("lan") == {B.key}
    assert backend.gc("lan", {B.key}) == []


def test_a_failed_change_is_a_firewall_error_naming_backend_and_table() -> None:
    backend = FakeBackend("fake")
    backend.places[0] = Place(
        Broken({"FORWARD": []}, ("FORWARD",)), "filter", ("FORWARD",), frozenset({4})
    )
    with pytest.raises(CNIError) as err:
        backend.add_pod(B)
    assert err.value.code == ErrorCode.FIREWALL_FAILED
    assert err.value.msg.startswith("fake: fake: add rules of b-cid eth0: ")
    assert "Operation not permitted" in err.value.msg
    assert "new_chain CBD-FORWARD" in err.value.details


def test_macspoofchk_without_a_bridge_family_table_is_refused_and_reported() -> None:
    backend = FakeBackend("fake", with_bridge=False)
    with pytest.raises(CNIError, match="macspoofchk"):
        backend.add_pod(A)
    assert any("macspoofchk" in m for m in backend.check_pod(A))
    backend.add_pod(B)  # pods without macspoofchk are fine


def test_facade_names_missing_rules_per_backend_and_reasserts_them() -> None:
    one, two = FakeBackend("one"), FakeBackend("two")
    fw = facade(one, two)
    fw.ensure_bridge("br0")
    fw.add_pod(B)
    assert fw.check_pod(B) == []
    assert two.filter.chains is not None
    two.filter.chains["FORWARD"].pop(0)
    assert fw.check_pod(B) == ["two: fake FORWARD: forward"]
    assert fw.reassert([B]) == ["two: fake FORWARD: forward"]
    assert fw.check_pod(B) == []


def test_facade_deletes_in_unselected_backends_and_keeps_going_on_errors() -> None:
    selected, old = FakeBackend("selected"), FakeBackend("old")
    old.add_pod(B)  # added while another backend was in use
    fw = facade(selected, cleanup=[old])
    assert fw.pods("lan") == {B.key}
    broken = FakeBackend("broken")
    broken.add_pod(B)
    broken.filter.apply = Broken(None, ()).apply  # type: ignore[method-assign]
    fw = facade(broken, selected, cleanup=[old])
    with pytest.raises(CNIError, match="broken"):
        fw.del_pod(B.network, B.container_id, B.ifname)
    assert fw.pods("lan") == {B.key}  # only the broken backend still has it
    assert old.pods("lan") == set()


class Garbling(StrictTable):
    """A table that reads our rules back unrecognisably (as python-iptables did ``a'b``)."""

    def read(self, focus: str | None = None) -> TableState | None:
        state = super().read(focus)
        if state is not None:
            for rules in state.chains.values():
                rules[:] = [replace(r, comment=f"{r.comment}\\") if r.comment else r for r in rules]
        return state


def test_rules_that_cannot_be_read_back_are_written_once_and_reported() -> None:
    backend = FakeBackend("fake")
    backend.filter = Garbling({"FORWARD": [FOREIGN]}, ("FORWARD",))
    backend.places[0] = Place(backend.filter, "filter", ("FORWARD",), frozenset({4, 6}))
    with pytest.raises(CNIError) as err:
        backend.add_pod(A)
    assert err.value.code == ErrorCode.FIREWALL_FAILED
    assert "cannot be read back" in err.value.msg
    assert backend.filter.chains is not None
    written = copy.deepcopy(backend.filter.chains)
    for _ in range(5):  # the periodic re-assertion: an error each time, never a duplicate
        with pytest.raises(CNIError, match="not writing them again"):
            backend.restore_pod(A)
    assert backend.filter.chains == written
    # foreign, FORWARD jump, bridge accept, pod jump, two pod rules: each once
    assert sum(len(r) for r in written.values()) == 6
