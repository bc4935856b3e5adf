"""Pod veths deleted in batches (datapath/vethreaper.py, issue 16 target 3): DELs that wait
together go out as one device-group delete, and nothing but their veths goes with it.

Two nameless namespaces of our own: a "node" holding the host ends and a foreign veth and
dummy an operator made, a "pod" holding the peers. The root namespace guard checks the
machine's own links are untouched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import subprocess
import threading
from collections.abc import Iterator, Sequence

import pytest

from cni_bridge_dhcp.agent.datapath.netns import new_anonymous_netns, run_in_netns
from cni_bridge_dhcp.agent.datapath.rtnl import LinkRemovals, Rtnl, new_socket
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
        answers = await asyncio.gather(
            reaper.delete(None, "eth0", "vb0"),
            reaper.delete(None, "eth1", "vb1"),
            return_exceptions=True,
        )
        return list(answers)

    _make_pods(ns, 2)
    results = run_in_netns(ns.node, lambda: asyncio.run(stop_two()))
    assert [type(r) for r in results] == [OSError, OSError]
    assert ns.names(ns.node) == {"lo", "keep0", "keep0p", "vb0", "vb1"}


def test_a_del_answers_once_its_pair_is_gone_without_waiting_for_the_kernels_answer(
    ns: Namespaces, caplog: pytest.LogCaptureFixture
) -> None:
    """The kernel answers a veth delete only after RCU grace periods; the pair is out of
    both namespaces long before. Here the kernel's answer is held back until the DELs have
    returned: they must return on the links' removal, with both ends gone and the host
    names free for the next pod, and a refusal that comes late is logged, not lost."""
    names = _make_pods(ns, 3)
    kernel_answered = threading.Event()
    answers_may_go = threading.Event()

    def answering_late(batch: Sequence[str]) -> dict[str, Outcome]:
        outcomes = delete_host_links(batch)
        answers_may_go.wait(10)
        kernel_answered.set()
        return {name: RuntimeError("refused late") for name in outcomes}

    seen: dict[str, object] = {}

    async def stop_all() -> list[bool]:
        reaper = VethReaper(answering_late)
        try:
            first = await asyncio.wait_for(reaper.delete(None, "eth0", names[0]), 10)
            rest = await asyncio.wait_for(
                asyncio.gather(*(reaper.delete(None, "eth0", n) for n in names[1:])), 10
            )
            seen["answered first"] = not kernel_answered.is_set()
            seen["pod"] = ns.names(ns.pod)
            seen["node"] = ns.names(ns.node)
            with ns.node_rtnl() as r:  # the names are free at once
                r.add_veth(names[0], "again0", ns.pod)
            return [first, *rest]
        finally:
            answers_may_go.set()

    with caplog.at_level(logging.WARNING):
        results = run_in_netns(ns.node, lambda: asyncio.run(stop_all()))
    assert results == [True, True, True]
    assert seen["answered first"], "a DEL waited for the kernel's answer to its delete"
    assert seen["pod"] == {"lo"}
    assert seen["node"] == {"lo", "keep0", "keep0p"}
    assert "refused late" in caplog.text


def test_without_link_announcements_a_del_waits_for_the_kernels_answer(ns: Namespaces) -> None:
    names = _make_pods(ns, 2)

    def no_socket() -> LinkRemovals:
        raise OSError(24, "Too many open files")

    async def stop_all() -> list[bool]:
        reaper = VethReaper(removals=no_socket)
        return await asyncio.gather(*(reaper.delete(None, "eth0", n) for n in names))

    assert run_in_netns(ns.node, lambda: asyncio.run(stop_all())) == [True, True]
    assert ns.names(ns.node) == {"lo", "keep0", "keep0p"}


def test_a_port_leaving_its_bridge_is_not_a_removal(ns: Namespaces) -> None:
    """A bridge announces a port's release with its own RTM_DELLINK (family AF_BRIDGE)
    while the link lives on: that must not answer a DEL."""
    names = _make_pods(ns, 1)

    def ip(*args: str) -> None:
        # A child forked from this thread starts in the node namespace it entered.
        subprocess.run(["ip", *args], check=True)

    def watch() -> tuple[list[str], list[str]]:
        removals = LinkRemovals()
        try:
            ip("link", "add", "br9", "type", "bridge")
            ip("link", "set", names[0], "master", "br9")
            ip("link", "set", names[0], "nomaster")
            released = removals.read()
            ip("link", "del", names[0])
            return released, removals.read()
        finally:
            removals.close()

    released, deleted = run_in_netns(ns.node, watch)
    assert released == []
    assert deleted == [names[0]]
