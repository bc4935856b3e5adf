"""wait_slaac in a real namespace on a real LAN: DAD honoured, no RA gives None quickly;
node_link_local (the pod's IPv6 gateway in node mode) read from a real bridge."""

from __future__ import annotations

import ipaddress
import json
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from cni_bridge_dhcp.agent.datapath import slaac
from cni_bridge_dhcp.agent.datapath.netns import run_in_netns
from cni_bridge_dhcp.agent.datapath.slaac import (
    RA_WAIT,
    RFC4861_RS_ANSWER,
    node_link_local,
    wait_slaac,
)
from testbed.sandbox import LAN_PREFIX6, Sandbox, run

pytestmark = [pytest.mark.netns]


def _fd(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def test_dad_is_honoured_past_the_ra_wait(sandbox: Sandbox) -> None:
    sandbox.start_dnsmasq(ipv6_ra=True)
    pod = sandbox.add_pod("dad")
    up_at = time.monotonic()
    sandbox.attach_to_lan(pod)  # accept_dad=1 (the namespace default): ~1 s per address
    fd = _fd(pod.path)
    try:
        # dnsmasq has just sent its start-up RAs: RFC 4861 lets a router hold the answer to
        # the pod's RS until 3 s after its last multicast RA (+0.5 s random delay), so this
        # test waits that long for the RA, twice over: on a loaded machine the pod's RS
        # leaves late (it failed once in ~20 runs with a single allowance). What it checks
        # is that DAD is waited for.
        found = wait_slaac(fd, "eth0", up_at, timeout=15, ra_wait=2 * RFC4861_RS_ANSWER)
    finally:
        os.close(fd)
    took = time.monotonic() - up_at
    assert found is not None, f"no SLAAC address after {took:.1f} s"
    assert found.address.network == ipaddress.IPv6Network(f"{LAN_PREFIX6}/64")
    assert took > RA_WAIT  # DAD of the link-local, then of the SLAAC address
    shown = run(["ip", "-6", "addr", "show", "dev", "eth0"], netns=pod.name).stdout
    line = next(x for x in shown.splitlines() if str(found.address.ip) in x)
    assert "tentative" not in line
    assert found.router is not None and found.router.is_link_local


def test_no_ra_is_none_soon_after_dad(sandbox: Sandbox) -> None:
    sandbox.start_dnsmasq()
    pod = sandbox.add_pod("quiet")
    up_at = time.monotonic()
    sandbox.attach_to_lan(pod)
    fd = _fd(pod.path)
    try:
        found = wait_slaac(fd, "eth0", up_at, timeout=15, ra_wait=0.2)
    finally:
        os.close(fd)
    took = time.monotonic() - up_at
    assert found is None
    assert took < 4, took  # link-local DAD (~1 s) + 0.2 s, far below ipam.timeout


def test_the_wait_wakes_on_the_address_announcement_and_does_not_poll(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A router that answers late (RFC 4861 lets it take 3.5 s) keeps ADD in this wait:
    it rescans the pod's addresses when the kernel announces a change, not every 20 ms
    (a scan is a netlink dump in the pod's namespace, on the agent's CPU)."""
    sandbox.start_dnsmasq()  # no RAs: the address below stands in for a late one
    pod = sandbox.add_pod("late")
    up_at = time.monotonic()
    sandbox.attach_to_lan(pod)
    scans = 0
    real_scan = slaac._scan

    def counted(*args: object, **kwargs: object) -> tuple[ipaddress.IPv6Interface | None, bool]:
        nonlocal scans
        scans += 1
        return real_scan(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(slaac, "_scan", counted)
    late = ipaddress.IPv6Interface("2001:db8:77:5::5/64")
    fd = _fd(pod.path)
    try:
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(wait_slaac, fd, "eth0", up_at, 15, 30.0)
            time.sleep(2.5)  # past the link-local's DAD (~1 s): a quiet wait
            assert not waiting.done()
            # What SLAAC adds: global, with lifetimes (not permanent), DAD done.
            lifetimes = ["valid_lft", "300", "preferred_lft", "300", "nodad"]
            run(["ip", "-6", "addr", "add", str(late), "dev", "eth0", *lifetimes], netns=pod.name)
            found = waiting.result(timeout=10)
    finally:
        os.close(fd)
    assert found is not None and found.address == late
    # Polling every 20 ms scanned ~125 times here; announcements (link-local DAD done, the
    # new address) and a rescan a second make a handful.
    assert scans <= 8, scans


@pytest.fixture
def bridge_ns() -> Iterator[str]:
    """A namespace of our own with a bridge ``br0``, down and without ports."""
    name = f"cbd-ll-{uuid.uuid4().hex[:8]}"
    run(["ip", "netns", "add", name])
    try:
        run(["ip", "-n", name, "link", "add", "br0", "type", "bridge"])
        yield name
    finally:
        run(["ip", "netns", "del", name], check=False)


def _link_locals(ns: str, dev: str) -> list[str]:
    shown = json.loads(
        run(["ip", "-j", "-6", "addr", "show", "dev", dev, "scope", "link"], netns=ns).stdout
    )
    return [a["local"] for link in shown for a in link.get("addr_info", [])]


def test_node_link_local_is_the_bridges_once_it_forms(bridge_ns: str) -> None:
    """The pod's IPv6 gateway in node mode: the node's link-local on the bridge, waited for
    when the bridge is new, and none for a bridge that is not there."""
    fd = _fd(f"/run/netns/{bridge_ns}")
    try:
        assert run_in_netns(fd, lambda: node_link_local("nosuchbr", wait=0.1)) is None
        # No carrier yet, so no link-local: it forms once a port comes up, mid-wait.
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(run_in_netns, fd, lambda: node_link_local("br0", wait=10))
            time.sleep(0.3)
            assert not waiting.done()
            ipn = ["ip", "-n", bridge_ns, "link"]
            run([*ipn, "add", "p0", "type", "veth", "peer", "p1"])
            run([*ipn, "set", "p0", "master", "br0", "up"])
            run([*ipn, "set", "p1", "up"])
            run([*ipn, "set", "br0", "up"])
            found = waiting.result(timeout=15)
        assert found is not None and found.is_link_local
        assert [str(found)] == _link_locals(bridge_ns, "br0")
        # Its link-local gone (and forming none while down): none after the wait.
        run(["ip", "-n", bridge_ns, "link", "set", "br0", "down"])
        run(["ip", "-n", bridge_ns, "-6", "addr", "flush", "dev", "br0"])
        assert _link_locals(bridge_ns, "br0") == []
        assert run_in_netns(fd, lambda: node_link_local("br0", wait=0.1)) is None
    finally:
        os.close(fd)
