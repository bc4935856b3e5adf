"""The uplink watcher reacts to the uplink's own link events, not to every pod veth.

Each ADD and DEL creates or deletes a veth on the node; the watcher used to decode every
such event with pyroute2 and run a full uplink check after each burst (netlink requests,
journal read): about a third of the agent's CPU per operation. A veth with a random name
and MAC can never be the uplink; the uplink (by name, or by its MAC when a NIC comes back
under another name) still triggers a check at once.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from cni_bridge_dhcp.agent.datapath.netns import open_netns, run_in_netns
from cni_bridge_dhcp.agent.datapath.rtnl import Link
from cni_bridge_dhcp.agent.uplink import journal as uj
from cni_bridge_dhcp.agent.uplink import watch
from cni_bridge_dhcp.agent.uplink.plan import UplinkSnapshot
from cni_bridge_dhcp.agent.uplink.reattach import PortCheck
from testbed.sandbox import Sandbox, run

SETTLE = watch.DEBOUNCE + 0.8  # a check, when due, runs DEBOUNCE after the event


def _journal(sb: Sandbox, state_dir: Path) -> None:
    link = json.loads(run(["ip", "-n", sb.node, "-j", "link", "show", "eth0"]).stdout)[0]
    snap = UplinkSnapshot(
        uplink="eth0",
        ifindex=int(link["ifindex"]),
        mac=str(link["address"]),
        mtu=1500,
        up=True,
        addresses=(),
        routes=(),
        neighbours=(),
        accept_ra="1",
        bridge_pre=None,
        taken_at=time.time(),
    )
    uj.save(state_dir, uj.Journal("cni0", "eth0", "eth0", uj.DONE, snap))


def _wait_count(calls: list[float], want: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(calls) < want:
        time.sleep(0.05)
    return len(calls)


def test_pod_veth_events_do_not_trigger_uplink_checks(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = sandbox
    ipn = ["ip", "-n", sb.node]
    run([*ipn, "link", "add", "cni0", "type", "bridge"])
    # as a takeover leaves it: the bridge wears the uplink's MAC, so every port's events
    # carry that MAC too (in the bridge id)
    uplink_mac = json.loads(run([*ipn, "-j", "link", "show", "eth0"]).stdout)[0]["address"]
    run([*ipn, "link", "set", "cni0", "address", uplink_mac])
    run([*ipn, "link", "set", "cni0", "up"])
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    _journal(sb, state_dir)

    calls: list[float] = []
    lock = threading.Lock()

    def counting_check(state: Path) -> PortCheck | None:
        with lock:
            calls.append(time.monotonic())
        return None

    monkeypatch.setattr(watch, "check_port", counting_check)
    decoded: list[str] = []  # every link event the watcher decoded (then judged)
    real_relevant = watch.UplinkWatcher.relevant

    def counting_relevant(self: watch.UplinkWatcher, link: Link) -> bool:
        decoded.append(link.name)
        return real_relevant(self, link)

    monkeypatch.setattr(watch.UplinkWatcher, "relevant", counting_relevant)
    watcher = watch.UplinkWatcher(state_dir, interval=3600)
    fd = open_netns(f"/run/netns/{sb.node}")
    try:
        # the watcher's thread is started from one inside the node namespace: it inherits it
        run_in_netns(fd, watcher.start)
        assert _wait_count(calls, 1, 5) == 1, "the start-up check did not run"
        time.sleep(SETTLE)
        baseline = len(calls)
        decoded.clear()

        # what ADDs and DELs do on the node: veths come, join the bridge, go
        for n in range(5):
            host = f"veth{os.urandom(4).hex()}"
            run([*ipn, "link", "add", host, "type", "veth", "peer", "name", f"p{n}"])
            run([*ipn, "link", "set", host, "master", "cni0", "up"])
            run([*ipn, "link", "del", host])
            time.sleep(watch.DEBOUNCE + 0.05)
        time.sleep(SETTLE)
        assert len(calls) == baseline, f"{len(calls) - baseline} uplink checks for pod veths"
        # only events naming the uplink or holding its MAC as a link address are decoded:
        # the bridge's own (its carrier comes and goes), none of the veths' (their port
        # info holds the bridge id, with the uplink's MAC in it)
        assert set(decoded) <= {"cni0"}, decoded

        # the uplink itself changing is still checked at once
        run([*ipn, "link", "set", "eth0", "down"])
        run([*ipn, "link", "set", "eth0", "up"])
        assert _wait_count(calls, baseline + 1, 3) > baseline, "no check after an uplink event"

        # so is a link that comes with the uplink's MAC under another name (a NIC back after
        # a driver reload, renamed by udev): found by the MAC's bytes, not by its name
        time.sleep(SETTLE)
        seen = len(calls)
        mac = json.loads(run([*ipn, "-j", "link", "show", "eth0"]).stdout)[0]["address"]
        run([*ipn, "link", "add", "nic1", "address", mac, "type", "veth", "peer", "name", "nic1p"])
        assert _wait_count(calls, seen + 1, 3) > seen, "no check for a link with the uplink's MAC"
    finally:
        watcher.stop()
        os.close(fd)
