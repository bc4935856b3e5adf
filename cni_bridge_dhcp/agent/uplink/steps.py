"""The journaled steps that move the uplink into the bridge.

Each step's name is journaled before it runs, so a process killed mid-way leaves a
journal that says how far it got (``maybe_crash`` lets the crash-safety tests kill the
agent right after each step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ...cni.errors import CNIError, ErrorCode
from ..datapath.bridge import BridgeSpec, ensure_bridge
from ..datapath.netlink import Netlink, get_link, lookup
from ..runtime.faults import maybe_crash
from . import journal as uj
from .kernel import addr_add, addr_del, neigh_replace, route_add, route_del
from .plan import AddrSnap, RouteSnap, addresses_to_move, bridge_label, replay_plan
from .port import bridge_ipv6, quiet_port
from .verify import verify_gateway


def take_over(
    ipr: Netlink,
    spec: BridgeSpec,
    journal: uj.Journal,
    state_dir: Path,
    verify_timeout: float,
    *,
    verify: bool = True,
) -> None:
    """Move the journal's snapshotted uplink into bridge ``spec``, one journaled step at a time.

    Raises on the first failing step; the caller rolls back to the snapshot. ``verify=False``
    (a restore rolled forward) skips the gateway check: the bridge is where the node was.
    """
    snap = journal.snapshot
    assert snap is not None
    uplink, brname = snap.uplink, spec.name
    up_index = snap.ifindex

    def step(name: str, action: Callable[[], None]) -> None:
        journal.steps.append(name)
        uj.save(state_dir, journal)
        action()
        maybe_crash(f"uplink:{name}")

    def make_bridge() -> None:
        # The node's own traffic now leaves through the bridge: it gets the uplink's MTU
        # unless one was configured, and the uplink's IPv6 autoconfiguration settings.
        ensure_bridge(replace(spec, mtu=spec.mtu or snap.mtu), mac=snap.mac, ipr=ipr)
        bridge_ipv6(brname, snap)

    step("bridge", make_bridge)
    br_index = lookup(ipr, brname)
    if br_index is None:
        raise CNIError(ErrorCode.UPLINK_FAILED, f"bridge {brname!r} disappeared")

    def set_mac() -> None:
        if get_link(ipr, br_index).get_attr("IFLA_ADDRESS") != snap.mac:
            ipr.link("set", index=br_index, address=snap.mac)

    step("mac", set_mac)

    for n, addr in enumerate(addresses_to_move(snap)):

        def move(addr: AddrSnap = addr) -> None:
            label = bridge_label(addr.label, uplink, brname)
            addr_add(ipr, br_index, addr, label)
            addr_del(ipr, up_index, addr)

        step(f"addr:{n}", move)

    def enslave() -> None:
        quiet_port(up_index, uplink, snap)
        ipr.link("set", index=up_index, master=br_index)

    step("enslave", enslave)

    names = {uplink: up_index, brname: br_index}
    for n, route in enumerate(replay_plan(snap.routes, uplink)):

        def replay(route: RouteSnap = route) -> None:
            # IPv6 routes survive the address move on the uplink; IPv4 ones were flushed
            # with its last address. Either way none may stay: it would bypass the bridge.
            route_del(ipr, route, names)
            route_add(ipr, route.on_device(uplink, brname), names)

        step(f"route:{n}", replay)

    if snap.neighbours:
        step("neigh", lambda: neigh_replace(ipr, br_index, snap.neighbours))

    if verify:
        step("verify", lambda: verify_gateway(ipr, br_index, brname, snap, verify_timeout))
