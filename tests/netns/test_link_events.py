"""The uplink watcher's link-event subscription keeps nothing it has read (issue 16, target 7).

Every pod ADD/DEL makes RTM_NEWLINK/RTM_DELLINK events in the node namespace (the veth's
host end). The watcher polls the subscription's fd and reads when it is readable. With
pyroute2's handle (before datapath/rtnl.py), one read took one datagram from its internal
queue while its event loop had already pulled every waiting datagram off the socket: the fd
then looked idle and the rest stayed queued for ever, each pinned in a 4 KiB mapping
(recvfrom(256 KiB) shrunk in place), ~20 KiB of agent RSS per pod cycle. Here: a namespace of our own, veth pairs added
and deleted in bursts, the watcher's own read loop, and the memory the process allocated
meanwhile (tracemalloc) must not grow with the number of events.
"""

from __future__ import annotations

import gc
import os
import select
import tracemalloc

from cni_bridge_dhcp.agent.datapath.netlink import LinkEvents, link_events, netns_ipr
from cni_bridge_dhcp.agent.datapath.netns import new_anonymous_netns, run_in_netns
from cni_bridge_dhcp.agent.datapath.rtnl import RTM_NEWLINK

ROUNDS = 300


def _read_while_readable(events: LinkEvents) -> list[bool]:
    """What the watcher's loop does: read while poll() says the fd is readable."""
    seen = []
    poller = select.poll()
    poller.register(events.fileno(), select.POLLIN)
    while poller.poll(50):
        seen.append(any(link.event == RTM_NEWLINK for link in events.read()))
    return seen


def _burst(name: str) -> None:
    """One pod's worth of link events: a veth pair made, set up and deleted. A fresh
    handle each time, as the agent's operations use (a long-lived pyroute2 request handle
    keeps bookkeeping of its own that would blur the figure)."""
    with netns_ipr(None) as ipr:
        ipr.link("add", ifname=name, kind="veth", peer=f"{name}p")
        ipr.link("set", ifname=name, state="up")
        ipr.link("del", ifname=name)


def _rounds() -> tuple[int, int]:
    """In the namespace (pyroute2 handles stay in the thread that made them): the number
    of bursts seen as a change, and the bytes allocated meanwhile and still held."""
    events = link_events()
    try:
        # warm-up: first reads set up parsers and buffers that are kept on purpose
        for i in range(20):
            _burst(f"dw{i}")
            _read_while_readable(events)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        changed = 0
        for i in range(ROUNDS):
            _burst(f"d{i}")  # several events before the watcher reads, like one pod's veth
            changed += any(_read_while_readable(events))
        gc.collect()
        return changed, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        events.close()


def test_link_events_leave_nothing_queued_behind() -> None:
    fd = new_anonymous_netns()
    try:
        changed, grown = run_in_netns(fd, _rounds)
    finally:
        os.close(fd)
    assert changed == ROUNDS, "every burst with an RTM_NEWLINK must be seen as a change"
    # ~3 events of ~1 KiB per round were left behind before the fix (~900 KiB here)
    assert grown < 128 * 1024, f"{grown} bytes kept after {ROUNDS} rounds of link events"
