"""Pod veths deleted in batches (datapath/vethreaper.py, issue 16 target 3): DELs that wait
together go out as one device-group delete, and nothing but their veths goes with it.

Two nameless namespaces of our own: a "node" holding the host ends and a foreign veth and
dummy an operator made, a "pod" holding the peers. The root namespace guard checks the
machine's own links are untouched.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator, Sequence

import pytest

from cni_bridge_dhcp.agent.datapath.netns import new_anonymous_netns, run_in_netns
from cni_bridge_dhcp.agent.datapath.rtnl import Rtnl, new_socket
from cni_bridge_dhcp.agent.datapath.vethreaper import Outcome, VethReaper, delete_host_links

FOREIGN_GROUP = 0x4342_0005  # inside the range the batches draw from


class Namespaces:
    def __init__(self) -> None:
        self.node = new_anonymous_netns()
        self.pod = new_anonymous_netns()

    def node_rtnl(self) -> Rtnl:
        return Rtnl(run_in_netns(self.node, new_socket))

    def names(self, fd: int) -> set[str]:
        with Rtnl(run_in_netns(fd, new_socket)) as r:
            return {link.name for link in r.links() if link.name}

    def groups(self) -> dict[str, int | None]:
        with self.node_rtnl() as r:
            return {link.name: link.group for link in r.links() if link.name}

    def close(self) -> None:
        os.close(self.node)
        os.close(self.pod)


@pytest.fixture
def ns() -> Iterator[Namespaces]:
    spaces = Namespaces()
    try:
        with spaces.node_rtnl() as r:
            # What the operator has: a veth in a group the batches could draw, and a dummy.
            r.add_veth("keep0", "keep0p", spaces.node)
            keep = r.get_link(name="keep0")
            assert keep is not None
            r.set_link(keep.index, up=True, group=FOREIGN_GROUP)
        yield spaces
    finally:
        spaces.close()


def _make_pods(ns: Namespaces, count: int) -> list[str]:
    names = [f"vb{i}" for i in range(count)]
    with ns.node_rtnl() as r:
        for i, name in enumerate(names):
            r.add_veth(name, f"eth{i}", ns.pod)
            link = r.get_link(name=name)
            assert link is not None
            r.set_link(link.index, up=True)
    return names


def test_a_batch_deletes_exactly_its_veths_and_skips_a_group_in_use(
    ns: Namespaces, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = _make_pods(ns, 12)
    drawn = iter([FOREIGN_GROUP, FOREIGN_GROUP + 1])
    monkeypatch.setattr(random, "randint", lambda low, high: next(drawn))

    outcomes = run_in_netns(ns.node, lambda: delete_host_links([*names, "gone0"]))

    assert outcomes == {**dict.fromkeys(names, True), "gone0": False}
    assert next(drawn, None) is None, "the group the operator's veth is in was not skipped"
    # The pods' veths are gone on both sides; the operator's veth keeps its group.
    assert ns.names(ns.pod) == {"lo"}
    assert ns.groups() == {"lo": 0, "keep0": FOREIGN_GROUP, "keep0p": 0}


def test_dels_waiting_together_share_one_delete_and_each_gets_its_answer(
    ns: Namespaces,
) -> None:
    names = _make_pods(ns, 10)
    batches: list[list[str]] = []

    def recording(batch: Sequence[str]) -> dict[str, Outcome]:
        batches.append(list(batch))
        return delete_host_links(batch)

    async def stop_all() -> list[bool]:
        reaper = VethReaper(recording)
        # Worker threads start from this (node namespace) thread and share its namespace.
        return await asyncio.gather(*(reaper.delete(None, "eth0", n) for n in names))

    results = run_in_netns(ns.node, lambda: asyncio.run(stop_all()))

    assert results == [True] * 10
    assert batches == [names]
    assert ns.names(ns.pod) == {"lo"}
    assert ns.names(ns.node) == {"lo", "keep0", "keep0p"}


def test_a_lone_del_deletes_its_pair_from_the_pod_side_when_the_host_end_is_gone(
    ns: Namespaces,
) -> None:
    """An old record without the host end's name: the pod's side goes, the rest stays."""
    _make_pods(ns, 2)

    async def stop_one() -> bool:
        return await VethReaper().delete(ns.pod, "eth1", None)

    assert run_in_netns(ns.node, lambda: asyncio.run(stop_one())) is True
    assert ns.names(ns.pod) == {"lo", "eth0"}
    assert ns.names(ns.node) == {"lo", "keep0", "keep0p", "vb0"}


def test_a_failed_batch_answers_every_waiting_del(ns: Namespaces) -> None:
    def broken(batch: Sequence[str]) -> dict[str, Outcome]:
        raise OSError(24, "Too many open files")

    async def stop_two() -> list[bool | BaseException]:
        reaper = VethReaper(broken)
        return await asyncio.gather(
            reaper.delete(None, "eth0", "vb0"),
            reaper.delete(None, "eth1", "vb1"),
            return_exceptions=True,
        )

    _make_pods(ns, 2)
    results = run_in_netns(ns.node, lambda: asyncio.run(stop_two()))
    assert [type(r) for r in results] == [OSError, OSError]
    assert ns.names(ns.node) == {"lo", "keep0", "keep0p", "vb0", "vb1"}
