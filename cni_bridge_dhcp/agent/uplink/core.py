"""Uplink takeover: move the node's LAN interface into the pod bridge, safely.

The node's uplink (``eth0``) becomes a port of the bridge and everything that made it the
node's interface - MAC, IPv4/IPv6 addresses, routes of every table, permanent neighbours,
MTU, IPv6 RA settings - moves to the bridge. Done wrong this cuts the node off its network,
so it is done as a journaled sequence of small steps:

1. snapshot the uplink and write it to the journal before touching anything;
2. each step's name is journaled before the step runs (``bridge``, ``mac``, ``addr:<n>``,
   ``enslave``, ``route:<n>``, ``neigh``, ``verify``);
3. after the move, the node must still reach its default gateway (ARP through the bridge);
4. any failure rolls back to the snapshot; a process that dies mid-way leaves the journal
   "in progress", and the next holder of the lock (agent start via :func:`recover`, or any
   ``ensure_uplink``) rolls it back before doing anything else.

Rollback converges on the snapshot idempotently instead of undoing steps one by one, so it
is correct whichever step was interrupted, and is itself safe to interrupt and re-run.

One takeover per node: ``flock`` on ``<state_dir>/uplink.lock`` serialises agents and
threads; callers arriving later find the journal "done" (without taking the lock when the
takeover is visibly still in place) and return at once.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ...cni.errors import CNIError, ErrorCode
from ..datapath.bridge import (
    BridgeSpec,
    bridge_ports,
    ensure_bridge,
    link_kind,
    pin_mtu,
    read_sysctl,
    write_sysctl,
)
from ..datapath.netlink import NetlinkError, node_ipr
from ..runtime.faults import maybe_crash
from . import journal as uj
from .plan import (
    _RTNH_STATE_FLAGS,
    AF_INET,
    AF_INET6,
    INFINITY_LIFE_TIME,
    NUD_PERMANENT,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_LOCAL,
    RTPROT_KERNEL,
    AddrSnap,
    BridgePre,
    NeighSnap,
    NextHop,
    RouteSnap,
    UplinkSnapshot,
    addresses_to_move,
    bridge_label,
    default_gateway,
    is_kernel_generated,
    is_kernel_ll,
    primary_ipv4,
    replay_plan,
    select_uplink,
)

log = logging.getLogger(__name__)

SYSFS_NET = Path("/sys/class/net")
IFF_UP = 0x1
NUD_REACHABLE = 0x02
NUD_STALE = 0x04
NUD_DELAY = 0x08
NUD_FAILED = 0x20
NUD_NOARP = 0x40
ETH_P_ARP = 0x0806

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class UplinkState:
    bridge: str
    uplink: str
    mac: str
    addresses: tuple[Interface, ...]
    node_ipv4: ipaddress.IPv4Address | None  # primary IPv4 of the node (on the bridge)
    gateway4: ipaddress.IPv4Address | None  # the node's default IPv4 gateway
    preconfigured: bool  # bridge was set up by netplan/networkd/NM, not by us

    def to_dict(self) -> dict[str, Any]:
        return {
            "bridge": self.bridge,
            "uplink": self.uplink,
            "mac": self.mac,
            "addresses": [str(a) for a in self.addresses],
            "node_ipv4": str(self.node_ipv4) if self.node_ipv4 else None,
            "gateway4": str(self.gateway4) if self.gateway4 else None,
            "preconfigured": self.preconfigured,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UplinkState:
        return cls(
            bridge=str(data["bridge"]),
            uplink=str(data["uplink"]),
            mac=str(data["mac"]),
            addresses=tuple(ipaddress.ip_interface(a) for a in data.get("addresses", ())),
            node_ipv4=ipaddress.IPv4Address(data["node_ipv4"]) if data.get("node_ipv4") else None,
            gateway4=ipaddress.IPv4Address(data["gateway4"]) if data.get("gateway4") else None,
            preconfigured=bool(data.get("preconfigured", False)),
        )


# --------------------------------------------------------------------------- public API


def ensure_uplink(
    bridge: BridgeSpec,
    uplink_spec: str,
    state_dir: Path,
    *,
    lock_timeout: float = 30.0,
    verify_timeout: float = 3.0,
    sysfs: Path = SYSFS_NET,
) -> UplinkState:
    """Take the uplink over into ``bridge`` once per node; return the resulting state.

    Raises CNIError(7) for an uplink that cannot be used (missing, wireless, port of another
    master), CNIError(11) when the lock cannot be had in ``lock_timeout`` seconds, and
    CNIError(102) when the takeover failed (the node has been rolled back to its snapshot).
    """
    journal = uj.load(state_dir)
    if (
        journal is not None
        and journal.phase in (uj.DONE, uj.PRECONFIGURED)
        and journal.bridge == bridge.name
        and journal.spec == uplink_spec
        and journal.state is not None
        and journal.belongs_here()
    ):
        with node_ipr() as ipr:
            if _in_place(ipr, journal.uplink, journal.bridge):
                return UplinkState.from_dict(journal.state)
    with uj.locked(state_dir, lock_timeout), node_ipr() as ipr:
        return _ensure_locked(ipr, bridge, uplink_spec, state_dir, verify_timeout, sysfs)


def recover(state_dir: Path, *, lock_timeout: float = 30.0) -> str | None:
    """At agent start: finish off an interrupted takeover/restore by rolling back to the snapshot.

    Returns a sentence saying what was done, or None when there was nothing to do.
    """
    if not uj.journal_path(state_dir).exists():
        return None
    with uj.locked(state_dir, lock_timeout):
        journal = uj.load(state_dir)
        if journal is None:
            return None
        if not journal.belongs_here():
            if journal.phase in (uj.DONE, *uj.INTERRUPTED):
                uj.archive(state_dir, "written in another boot or network namespace")
                return "archived an uplink journal from another boot or network namespace"
            return None
        if journal.phase not in uj.INTERRUPTED:
            return None
        with node_ipr() as ipr:
            return _roll_back_interrupted(ipr, state_dir, journal)


def restore(
    state_dir: Path,
    *,
    pods_present: bool,
    force: bool = False,
    lock_timeout: float = 30.0,
    verify_timeout: float = 3.0,
) -> UplinkState | None:
    """Undo the takeover: the uplink gets back its addresses, routes, MAC exactly as snapshotted.

    Refused with CNIError(7) while pods are attached (``pods_present`` or other bridge
    ports) unless ``force``. The bridge is deleted when no other port remains. Returns the
    state that was undone, or None when there was nothing of ours to undo.

    Never cuts the node off: refused with CNIError(102), nothing changed, when the bridge
    holds addresses or routes the snapshot lacks; and when the result differs from the
    snapshot or the default gateway does not answer through the uplink, the node is put
    back on the bridge (original snapshot kept) and CNIError(102) says why.
    """
    with uj.locked(state_dir, lock_timeout):
        journal = uj.load(state_dir, strict=True)
        if journal is None or not journal.belongs_here() or journal.snapshot is None:
            log.info("uplink restore: no takeover recorded in %s", state_dir)
            return None
        if journal.phase in (uj.PRECONFIGURED, uj.ROLLED_BACK, uj.RESTORED):
            log.info("uplink restore: nothing to undo (journal phase %s)", journal.phase)
            return None
        state = _state_from_snapshot(journal.bridge, journal.snapshot)
        with node_ipr() as ipr:
            if journal.phase in uj.INTERRUPTED:
                _roll_back_interrupted(ipr, state_dir, journal)
                return state
            br = _lookup(ipr, journal.bridge)
            others = [p for p in bridge_ports(ipr, br) if p != journal.uplink] if br else []
            if (pods_present or others) and not force:
                raise CNIError(
                    ErrorCode.INVALID_CONFIG,
                    f"pods are still attached to bridge {journal.bridge!r}; "
                    "remove them first or restore with --force",
                    f"bridge ports: {', '.join(others)}" if others else "",
                )
            _refuse_stripping(ipr, journal)
            journal.phase = uj.RESTORING
            uj.save(state_dir, journal)
            problems = _return_to_snapshot(ipr, journal, delete_any_bridge=True)
            if not problems:
                problems = _verify_restored(ipr, journal, verify_timeout)
            if problems:
                _roll_forward(ipr, state_dir, journal, problems, verify_timeout)
            journal.phase = uj.RESTORED
            journal.error = None
            uj.save(state_dir, journal)
        log.info("uplink %s restored from bridge %s", journal.uplink, journal.bridge)
        return state


def current_state(state_dir: Path) -> UplinkState | None:
    """The recorded takeover (ours or pre-configured), for status and CHECK."""
    journal = uj.load(state_dir)
    if (
        journal is None
        or journal.phase not in (uj.DONE, uj.PRECONFIGURED)
        or journal.state is None
        or not journal.belongs_here()
    ):
        return None
    return UplinkState.from_dict(journal.state)


def is_wireless(ifname: str, sysfs: Path = SYSFS_NET) -> bool:
    """Wi-Fi stations cannot be bridged (the AP drops frames from MACs it did not associate)."""
    return (sysfs / ifname / "wireless").exists() or (sysfs / ifname / "phy80211").exists()


# --------------------------------------------------------------------------- takeover


def _ensure_locked(
    ipr: Any,
    bridge: BridgeSpec,
    uplink_spec: str,
    state_dir: Path,
    verify_timeout: float,
    sysfs: Path,
) -> UplinkState:
    journal = uj.load(state_dir, strict=True)  # an unreadable one is never replaced
    if journal is not None and not journal.belongs_here():
        uj.archive(state_dir, "written in another boot or network namespace")
        journal = None
    if journal is not None and journal.phase in uj.INTERRUPTED:
        outcome = _roll_back_interrupted(ipr, state_dir, journal)
        log.warning("before taking the uplink over: %s", outcome)

    if (
        journal is not None
        and journal.phase == uj.DONE
        and journal.bridge == bridge.name
        and (port := _free_port(ipr, journal)) is not None
    ):
        # The uplink stopped being a port (NIC re-created, or released by an admin): the
        # node's addresses are still on the bridge, so the journal's snapshot is still the
        # pre-takeover truth. A fresh takeover would snapshot an empty eth0 instead.
        how = "released" if port == journal.port_index() else "re-created"
        log.warning(
            "uplink %s was %s and is no longer a port of %s: re-enslaving it (original "
            "snapshot kept)", journal.uplink, how, journal.bridge,
        )  # fmt: skip
        _reattach_locked(ipr, state_dir, journal, port, verify_timeout)

    links = [(int(link["index"]), str(link.get_attr("IFLA_IFNAME"))) for link in ipr.get_links()]
    uplink = select_uplink(uplink_spec, links, exclude=[bridge.name])

    if journal is not None and journal.phase in (uj.DONE, uj.PRECONFIGURED):
        if _in_place(ipr, journal.uplink, journal.bridge):
            if journal.bridge != bridge.name or journal.uplink != uplink:
                raise CNIError(
                    ErrorCode.INVALID_CONFIG,
                    f"uplinkInterface {uplink_spec!r}: this node's uplink {journal.uplink!r} "
                    f"is already taken over into bridge {journal.bridge!r}",
                    f"asked for {uplink!r} into {bridge.name!r}; one uplink bridge per node",
                )
            assert journal.state is not None
            if journal.spec != uplink_spec:
                journal.spec = uplink_spec
                uj.save(state_dir, journal)
            return UplinkState.from_dict(journal.state)
        uj.archive(state_dir, f"the recorded takeover of {journal.uplink} is no longer in place")
    elif journal is not None:
        uj.archive(state_dir, f"superseded by a new takeover (was {journal.phase})")

    link = ipr.link("get", ifname=uplink)[0]
    if is_wireless(uplink, sysfs):
        raise CNIError(
            ErrorCode.INVALID_CONFIG,
            f"uplinkInterface {uplink!r} is a wireless interface and cannot be bridged",
        )
    br_index = _lookup(ipr, bridge.name)
    if br_index is not None:
        kind, _ = link_kind(ipr.link("get", index=br_index)[0])
        if kind != "bridge":
            raise CNIError(
                ErrorCode.INVALID_CONFIG,
                f"bridge {bridge.name!r} already exists but is not a bridge",
                f"it is a {kind} link" if kind else "it is a link without a kind",
            )
    master = link.get_attr("IFLA_MASTER")
    if master:
        if master != br_index:
            raise CNIError(
                ErrorCode.INVALID_CONFIG,
                f"uplinkInterface {uplink!r} is already enslaved to {_name(ipr, master)!r}",
                f"it must be a free interface or a port of bridge {bridge.name!r}",
            )
        return _accept_preconfigured(ipr, bridge.name, uplink, uplink_spec, state_dir)

    snapshot = capture(ipr, uplink, bridge.name)
    journal = uj.Journal(
        bridge=bridge.name,
        uplink=uplink,
        spec=uplink_spec,
        phase=uj.IN_PROGRESS,
        snapshot=snapshot,
        steps=["snapshot"],
    )
    uj.save(state_dir, journal)
    log.info(
        "taking uplink %s over into bridge %s: %d addresses, %d routes to replay",
        uplink,
        bridge.name,
        len(addresses_to_move(snapshot)),
        len(replay_plan(snapshot.routes, uplink)),
    )
    maybe_crash("uplink:snapshot")
    try:
        _take_over(ipr, bridge, journal, state_dir, verify_timeout)
    except Exception as exc:
        step = journal.steps[-1]
        reason = exc.msg if isinstance(exc, CNIError) else _describe(exc)
        log.error(
            "uplink takeover failed at step %s: %s; rolling back", step, reason, exc_info=True
        )
        journal.phase = uj.ROLLING_BACK
        journal.error = f"step {step}: {reason}"
        uj.save(state_dir, journal)
        try:
            problems = _return_to_snapshot(ipr, journal, delete_any_bridge=False)
        except Exception as rb_exc:
            log.exception("rollback of uplink %s failed", uplink)
            raise CNIError(
                ErrorCode.UPLINK_FAILED,
                f"uplink takeover of {uplink!r} into {bridge.name!r} failed at step {step} "
                "and its rollback failed too",
                f"{reason}; rollback: {_describe(rb_exc)}; the agent retries the rollback "
                "at its next start, or run `cni-bridge-dhcp uplink restore --force`",
            ) from exc
        journal.phase = uj.ROLLED_BACK
        uj.save(state_dir, journal)
        details = reason + ("; after rollback: " + "; ".join(problems) if problems else "")
        raise CNIError(
            ErrorCode.UPLINK_FAILED,
            f"uplink takeover of {uplink!r} into {bridge.name!r} failed at step {step}; "
            "the uplink was restored",
            details,
        ) from exc
    state = _state_from_snapshot(bridge.name, snapshot)
    journal.phase = uj.DONE
    journal.state = state.to_dict()
    uj.save(state_dir, journal)
    log.info("uplink %s taken over into bridge %s", uplink, bridge.name)
    _warn_finite_lifetimes(snapshot, bridge.name)
    return state


def _take_over(
    ipr: Any,
    spec: BridgeSpec,
    journal: uj.Journal,
    state_dir: Path,
    verify_timeout: float,
    *,
    verify: bool = True,
) -> None:
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
        for key, value in (("accept_ra", _bridge_accept_ra(snap)), ("autoconf", snap.autoconf)):
            if value is not None:
                write_sysctl(f"net/ipv6/conf/{brname}/{key}", value)

    step("bridge", make_bridge)
    br_index = _lookup(ipr, brname)
    if br_index is None:
        raise CNIError(ErrorCode.UPLINK_FAILED, f"bridge {brname!r} disappeared")

    def set_mac() -> None:
        if _link(ipr, br_index).get_attr("IFLA_ADDRESS") != snap.mac:
            ipr.link("set", index=br_index, address=snap.mac)

    step("mac", set_mac)

    for n, addr in enumerate(addresses_to_move(snap)):

        def move(addr: AddrSnap = addr) -> None:
            label = bridge_label(addr.label, uplink, brname)
            _addr_add(ipr, br_index, addr, label)
            _addr_del(ipr, up_index, addr)

        step(f"addr:{n}", move)

    def enslave() -> None:
        _quiet_port(up_index, uplink, snap)
        ipr.link("set", index=up_index, master=br_index)

    step("enslave", enslave)

    names = {uplink: up_index, brname: br_index}
    for n, route in enumerate(replay_plan(snap.routes, uplink)):

        def replay(route: RouteSnap = route) -> None:
            # IPv6 routes survive the address move on the uplink; IPv4 ones were flushed
            # with its last address. Either way none may stay: it would bypass the bridge.
            _route_del(ipr, route, names)
            _route_add(ipr, route.on_device(uplink, brname), names)

        step(f"route:{n}", replay)

    if snap.neighbours:
        step("neigh", lambda: _neigh_replace(ipr, br_index, snap.neighbours))

    if verify:
        step("verify", lambda: _verify(ipr, br_index, brname, snap, verify_timeout))


def _accept_preconfigured(
    ipr: Any, bridge: str, uplink: str, spec: str, state_dir: Path
) -> UplinkState:
    """The uplink is already a port of the bridge: accept it untouched, if the node is on it."""
    br_snap = capture(ipr, bridge, None)
    up_snap = capture(ipr, uplink, None)
    bridge_global = [a for a in br_snap.addresses if a.scope == RT_SCOPE_UNIVERSE]
    uplink_global = [a for a in up_snap.addresses if a.scope == RT_SCOPE_UNIVERSE]
    if uplink_global and not bridge_global:
        raise CNIError(
            ErrorCode.INVALID_CONFIG,
            f"uplinkInterface {uplink!r} is a port of bridge {bridge!r} but still holds the "
            "node's addresses",
            "addresses on a bridge port are unusable; move them to the bridge or release the port",
        )
    moved = tuple(a for a in br_snap.addresses if a.scope == RT_SCOPE_UNIVERSE)
    state = UplinkState(
        bridge=bridge,
        uplink=uplink,
        mac=br_snap.mac,
        addresses=tuple(a.interface for a in moved),
        node_ipv4=primary_ipv4(moved),
        gateway4=_ipv4_or_none(default_gateway(_all_routes(ipr), AF_INET)),
        preconfigured=True,
    )
    journal = uj.Journal(
        bridge=bridge,
        uplink=uplink,
        spec=spec,
        phase=uj.PRECONFIGURED,
        state=state.to_dict(),
    )
    uj.save(state_dir, journal)
    log.info("bridge %s with uplink %s is pre-configured; accepted untouched", bridge, uplink)
    return state


# --------------------------------------------------------------------------- rollback


def _roll_back_interrupted(ipr: Any, state_dir: Path, journal: uj.Journal) -> str:
    was = journal.phase
    last = journal.steps[-1] if journal.steps else "none"
    if journal.snapshot is None:
        uj.archive(state_dir, "interrupted journal without a snapshot")
        return "archived an interrupted uplink journal that had no snapshot"
    journal.phase = uj.RESTORING if was == uj.RESTORING else uj.ROLLING_BACK
    journal.error = journal.error or f"interrupted ({was}) after step {last}"
    uj.save(state_dir, journal)
    problems = _return_to_snapshot(ipr, journal, delete_any_bridge=was == uj.RESTORING)
    journal.phase = uj.RESTORED if was == uj.RESTORING else uj.ROLLED_BACK
    uj.save(state_dir, journal)
    outcome = (
        f"rolled uplink {journal.uplink} back out of bridge {journal.bridge} to its snapshot "
        f"(the takeover was interrupted: {was}, last step {last})"
    )
    if problems:
        outcome += "; differences remain: " + "; ".join(problems)
    return outcome


def _return_to_snapshot(ipr: Any, journal: uj.Journal, *, delete_any_bridge: bool) -> list[str]:
    """Converge the node onto the journal's snapshot; idempotent, whatever step was reached.

    Returns the differences still visible afterwards (empty when the snapshot is intact).
    """
    snap = journal.snapshot
    assert snap is not None
    uplink, brname = snap.uplink, journal.bridge
    up_index = _lookup(ipr, uplink)
    if up_index is None:
        raise CNIError(ErrorCode.UPLINK_FAILED, f"uplink {uplink!r} has disappeared")
    br_index = _lookup(ipr, brname)
    if br_index is not None and link_kind(_link(ipr, br_index))[0] != "bridge":
        br_index = None  # not ours to touch
    plan = replay_plan(snap.routes, uplink)
    moved = addresses_to_move(snap)
    names = {uplink: up_index}
    if br_index is not None:
        names[brname] = br_index
        for route in reversed(plan):
            try:
                _route_del(ipr, route.on_device(uplink, brname), names)
            except NetlinkError as exc:
                log.debug(
                    "rollback: route %s not removed from %s: %s", route.describe(), brname, exc
                )
        if _link(ipr, up_index).get_attr("IFLA_MASTER") == br_index:
            ipr.link("set", index=up_index, master=0)
    _unquiet_port(uplink, snap)
    _restore_addresses(ipr, up_index, snap, moved)
    if br_index is not None:
        for addr in reversed(moved):
            _addr_del(ipr, br_index, addr)
    link = _link(ipr, up_index)
    if link.get_attr("IFLA_ADDRESS") != snap.mac:
        ipr.link("set", index=up_index, address=snap.mac)
    if link.get_attr("IFLA_MTU") != snap.mtu:
        ipr.link("set", index=up_index, mtu=snap.mtu)
    if bool(link["flags"] & IFF_UP) != snap.up:
        ipr.link("set", index=up_index, state="up" if snap.up else "down")
    for route in plan:
        _route_add(ipr, route, names)
    _neigh_replace(ipr, up_index, snap.neighbours)
    if br_index is not None:
        _settle_bridge(ipr, br_index, brname, uplink, snap.bridge_pre, delete_any_bridge)
    return snapshot_differences(snap, capture(ipr, uplink, None))


def _restore_addresses(ipr: Any, index: int, snap: UplinkSnapshot, moved: list[AddrSnap]) -> None:
    """Put the addresses back on the uplink in their snapshotted order.

    Order matters: the first IPv4 address is the source the kernel picks for destinations
    outside every local subnet (e.g. a /32 host route without src). An interrupted
    takeover can leave some addresses on the uplink and, once others are re-added, a
    different order (IPv4 appends, IPv6 prepends); then every movable address is removed
    and all are re-added in order. The routes that removal flushes are replayed after.
    """

    def key(a: AddrSnap) -> tuple[str, int]:
        return (a.address, a.prefixlen)

    live = [
        a
        for a in (_addr_from_msg(m) for m in ipr.addr("dump") if m["index"] == index)
        if not is_kernel_ll(a, snap.mac)
    ]
    for family in (AF_INET, AF_INET6):
        have = [a for a in live if a.family == family]
        want = [a for a in snap.addresses if a.family == family and not is_kernel_ll(a, snap.mac)]
        if [key(a) for a in have] == [key(a) for a in want]:
            continue
        if have:
            log.info("re-adding the addresses of %s in their snapshotted order", snap.uplink)
            for a in reversed(have):
                _addr_del(ipr, index, a)
        for addr in moved:
            if addr.family == family:
                _addr_add(ipr, index, addr, addr.label)


def _settle_bridge(
    ipr: Any, index: int, name: str, uplink: str, pre: BridgePre | None, delete_any: bool
) -> None:
    ports = [p for p in bridge_ports(ipr, index) if p != uplink]
    if not ports and (pre is None or delete_any):
        ipr.link("del", index=index)
        log.info("deleted bridge %s", name)
        return
    if pre is not None:
        link = _link(ipr, index)
        if link.get_attr("IFLA_ADDRESS") != pre.mac:
            ipr.link("set", index=index, address=pre.mac)
        pin_mtu(ipr, index, int(link.get_attr("IFLA_MTU")), pre.mtu, fresh=False)
        if pre.accept_ra is not None:
            write_sysctl(f"net/ipv6/conf/{name}/accept_ra", pre.accept_ra)
    else:
        log.warning("bridge %s kept: pods are still attached (%s)", name, ", ".join(ports))


def snapshot_differences(want: UplinkSnapshot, have: UplinkSnapshot) -> list[str]:
    """What differs between two snapshots, ignoring what the kernel regenerates or ages."""
    problems = []
    if want.mac != have.mac:
        problems.append(f"MAC {have.mac} instead of {want.mac}")
    if want.mtu != have.mtu:
        problems.append(f"MTU {have.mtu} instead of {want.mtu}")

    def addr_key(a: AddrSnap) -> tuple[Any, ...]:
        return (a.family, a.address, a.prefixlen, a.scope, a.settable_flags(), a.secondary,
                a.label, a.peer, a.broadcast, a.valid_lft is None, a.rt_priority)  # fmt: skip

    want_addrs = {addr_key(a) for a in addresses_to_move(want)}
    have_addrs = {addr_key(a) for a in addresses_to_move(have)}
    for key in sorted(want_addrs - have_addrs, key=str):
        problems.append(f"address {key[1]}/{key[2]} missing or changed")
    for key in sorted(have_addrs - want_addrs, key=str):
        problems.append(f"unexpected address {key[1]}/{key[2]}")
    want_routes = set(replay_plan(want.routes, want.uplink))
    have_routes = set(replay_plan(have.routes, have.uplink))
    problems += [f"route {r.describe()} missing" for r in want_routes - have_routes]
    problems += [f"unexpected route {r.describe()}" for r in have_routes - want_routes]
    return problems


# --------------------------------------------------------------------------- restore checks


def _refuse_stripping(ipr: Any, journal: uj.Journal) -> None:
    """Refuse (nothing changed) a restore that would remove what the node lives on.

    Everything of the node's on the bridge must be in the snapshot: an address or route
    it lacks (a snapshot taken of an emptied uplink, or something configured on the bridge
    since) would be deleted with the bridge. RA-learned state is exempt: it comes back on
    the uplink once the uplink accepts RAs again.
    """
    snap = journal.snapshot
    assert snap is not None
    br_index = _lookup(ipr, journal.bridge)
    if br_index is None:
        return
    held = capture(ipr, journal.bridge, None)
    want_addrs = {(a.address, a.prefixlen) for a in addresses_to_move(snap)}
    extra_addrs = [
        f"{a.address}/{a.prefixlen}"
        for a in addresses_to_move(held)
        if a.scope == RT_SCOPE_UNIVERSE
        and (a.address, a.prefixlen) not in want_addrs
        and not (a.family == AF_INET6 and a.valid_lft is not None)
    ]

    def key(r: RouteSnap) -> tuple[Any, ...]:
        return (r.family, r.dst, r.dst_len, r.table, r.gateway)

    want_routes = {key(r.on_device(snap.uplink, journal.bridge)) for r in snap.routes}
    extra_routes = [
        r.describe() for r in replay_plan(held.routes, journal.bridge) if key(r) not in want_routes
    ]
    if extra_addrs or extra_routes:
        raise CNIError(
            ErrorCode.UPLINK_FAILED,
            f"uplink restore refused: bridge {journal.bridge!r} holds addresses or routes "
            f"that the snapshot of {snap.uplink!r} lacks; restoring would cut the node off",
            "; ".join(
                ([f"addresses {', '.join(extra_addrs)}"] if extra_addrs else [])
                + ([f"routes {', '.join(extra_routes)}"] if extra_routes else [])
            )
            + f"; nothing was changed (snapshot taken at {time.ctime(snap.taken_at)}); move "
            "them to the uplink by hand if the snapshot is wrong",
        )


def _verify_restored(ipr: Any, journal: uj.Journal, timeout: float) -> list[str]:
    """After a restore the node must reach its default gateway through the uplink."""
    snap = journal.snapshot
    assert snap is not None
    index = _lookup(ipr, snap.uplink)
    if index is None:
        return [f"uplink {snap.uplink} has disappeared"]
    if not snap.up:
        return []  # it was down before the takeover: nothing can answer through it
    try:
        _verify(ipr, index, snap.uplink, snap, timeout)
    except CNIError as exc:
        return [exc.msg]
    return []


def _roll_forward(
    ipr: Any, state_dir: Path, journal: uj.Journal, problems: list[str], verify_timeout: float
) -> None:
    """A restore that did not give back the pre-takeover state: back onto the bridge.

    The bridge kept the node connected before; a half-restored uplink may not. The
    takeover is replayed from the same (original) snapshot, then CNIError(102) is raised.
    """
    snap = journal.snapshot
    assert snap is not None
    reason = "; ".join(problems)
    log.error("uplink restore of %s differs from its snapshot: %s; back onto the bridge",
              snap.uplink, reason)  # fmt: skip
    journal.phase = uj.IN_PROGRESS
    journal.steps = ["snapshot"]
    journal.port_ifindex = _lookup(ipr, snap.uplink)
    uj.save(state_dir, journal)
    try:
        # Not conditional on the gateway answering: the bridge is how the node was
        # connected before the restore, whether or not the gateway answers right now.
        _take_over(ipr, BridgeSpec(journal.bridge), journal, state_dir, 0, verify=False)
    except Exception as exc:
        journal.phase = uj.RESTORED
        journal.error = f"restore: {reason}; back onto the bridge: {_describe(exc)}"
        uj.save(state_dir, journal)
        raise CNIError(
            ErrorCode.UPLINK_FAILED,
            f"uplink {snap.uplink!r} restored with differences from its snapshot, and "
            f"putting it back on bridge {journal.bridge!r} failed too",
            journal.error + "; check the node's addresses and routes by hand",
        ) from exc
    journal.phase = uj.DONE
    journal.state = _state_from_snapshot(journal.bridge, snap).to_dict()
    journal.error = f"restore rolled forward: {reason}"
    uj.save(state_dir, journal)
    br_index = _lookup(ipr, journal.bridge)
    if br_index is not None:
        try:
            _verify(ipr, br_index, journal.bridge, snap, verify_timeout)
        except CNIError as exc:
            reason += f"; through the bridge too: {exc.msg}"
    raise CNIError(
        ErrorCode.UPLINK_FAILED,
        f"uplink restore of {snap.uplink!r} did not give back its pre-takeover state; the "
        f"node was put back on bridge {journal.bridge!r} (takeover still recorded)",
        f"{reason}; fix the cause and run `cni-bridge-dhcp uplink restore` again",
    )


# --------------------------------------------------------------------------- re-enslaving

RECREATED = "re-created"
RELEASED = "released"


@dataclass(frozen=True)
class PortCheck:
    """What :func:`check_port` found: a port ``re-created`` (and re-enslaved) or ``released``."""

    kind: str
    ifindex: int
    message: str


def check_port(
    state_dir: Path, *, lock_timeout: float = 30.0, verify_timeout: float = 3.0
) -> PortCheck | None:
    """For the link watcher: re-enslave a re-created uplink; report one released on purpose.

    A link under the recorded name (or, for a NIC back under another name, a physical link
    with the recorded MAC) that is no port of the bridge is either the port we made,
    released by ``ip link set nomaster`` (same ifindex: left alone until the next ADD), or
    a new link (NIC re-plugged, driver reloaded): re-enslaved at once, keeping the
    original snapshot. None when nothing needs attention (or no takeover of ours exists).
    """
    journal = _watched_journal(state_dir)
    if journal is None:
        return None
    with node_ipr() as ipr:
        index = _free_port(ipr, journal)
    if index is None:
        return None
    if index == journal.port_index():
        return PortCheck(
            RELEASED,
            index,
            f"uplink {journal.uplink} (ifindex {index}) is no longer a port of "
            f"{journal.bridge} (ip link set nomaster?): left alone until the next ADD",
        )
    with uj.locked(state_dir, lock_timeout), node_ipr() as ipr:
        journal = _watched_journal(state_dir)
        if journal is None or _free_port(ipr, journal) != index:
            return None  # someone else (an ADD) dealt with it meanwhile
        old = journal.port_index()
        _reattach_locked(ipr, state_dir, journal, index, verify_timeout)
    return PortCheck(
        RECREATED,
        index,
        f"uplink {journal.uplink} was re-created (ifindex {old} -> {index}): re-enslaved "
        f"into {journal.bridge}, original snapshot kept",
    )


def _watched_journal(state_dir: Path) -> uj.Journal | None:
    journal = uj.load(state_dir)
    if (
        journal is None
        or journal.phase != uj.DONE
        or journal.snapshot is None
        or not journal.belongs_here()
    ):
        return None
    return journal


def _free_port(ipr: Any, journal: uj.Journal) -> int | None:
    """ifindex of the uplink when it exists and is no port of any master, else None."""
    snap = journal.snapshot
    assert snap is not None
    br_index = _lookup(ipr, journal.bridge)
    if br_index is None or link_kind(_link(ipr, br_index))[0] != "bridge":
        return None  # without the bridge there is nothing to re-enslave into
    index = _lookup(ipr, journal.uplink)
    if index is None:
        index = _nic_by_mac(ipr, snap.mac, br_index)
    if index is None or _link(ipr, index).get_attr("IFLA_MASTER"):
        return None
    return index


# Kinds a node's uplink can be; stacked links (vlan, macvlan, ...) share their parent's
# MAC and must never be mistaken for it. A physical NIC has no kind; a veth is the uplink
# of containerised or nested nodes (and of the test sandboxes).
_UPLINK_KINDS = (None, "veth")


def _nic_by_mac(ipr: Any, mac: str, br_index: int) -> int | None:
    """A link that can be an uplink (see ``_UPLINK_KINDS``) whose MAC is ``mac``."""
    for link in ipr.get_links():
        index = int(link["index"])
        if index == br_index or link_kind(link)[0] not in _UPLINK_KINDS:
            continue
        if mac in (link.get_attr("IFLA_ADDRESS"), link.get_attr("IFLA_PERM_ADDRESS")):
            return index
    return None


def _reattach_locked(
    ipr: Any, state_dir: Path, journal: uj.Journal, index: int, verify_timeout: float
) -> None:
    """Make link ``index`` the bridge's port again; the journal keeps its snapshot."""
    snap = journal.snapshot
    assert snap is not None
    br_index = _lookup(ipr, journal.bridge)
    if br_index is None:
        raise CNIError(ErrorCode.UPLINK_FAILED, f"bridge {journal.bridge!r} disappeared")
    name = str(_link(ipr, index).get_attr("IFLA_IFNAME"))
    if name != snap.uplink:
        # Restore, status and doctor know the uplink by its recorded name.
        ipr.link("set", index=index, state="down")
        ipr.link("set", index=index, ifname=snap.uplink)
        log.warning("the uplink came back as %s (MAC %s): renamed to %s", name, snap.mac,
                    snap.uplink)  # fmt: skip
        name = snap.uplink
    on_bridge = {
        ipaddress.ip_address(_addr_from_msg(m).address)
        for m in ipr.addr("dump")
        if m["index"] == br_index
    }
    flush: list[AddrSnap] = []
    foreign: list[AddrSnap] = []
    for a in (_addr_from_msg(m) for m in ipr.addr("dump") if m["index"] == index):
        if a.scope != RT_SCOPE_UNIVERSE:
            continue
        dynamic6 = a.family == AF_INET6 and a.valid_lft is not None  # RA-learned
        (flush if dynamic6 or ipaddress.ip_address(a.address) in on_bridge else foreign).append(a)
    if foreign:
        raise CNIError(
            ErrorCode.UPLINK_FAILED,
            f"uplink {name!r} holds addresses bridge {journal.bridge!r} does not: not re-enslaved",
            ", ".join(f"{a.address}/{a.prefixlen}" for a in foreign)
            + "; a port's addresses are unusable: move them to the bridge or remove them",
        )
    _quiet_port(index, name, snap)
    for a in flush:
        _addr_del(ipr, index, a)
    # Routes through the new link (a DHCP client's default route, say) bypass the bridge.
    for route in _all_routes(ipr):
        if route.dev == name and route.table != RT_TABLE_LOCAL and route.proto != RTPROT_KERNEL:
            with contextlib.suppress(NetlinkError, CNIError):
                _route_del(ipr, route, {name: index})
    br_mtu = int(_link(ipr, br_index).get_attr("IFLA_MTU"))
    if int(_link(ipr, index).get_attr("IFLA_MTU")) != br_mtu:
        try:
            ipr.link("set", index=index, mtu=br_mtu)
        except NetlinkError as exc:
            log.warning("uplink %s: MTU %d not applied: %s", name, br_mtu, _describe(exc))
    ipr.link("set", index=index, master=br_index)
    if snap.up:
        ipr.link("set", index=index, state="up")
    journal.port_ifindex = index
    uj.save(state_dir, journal)
    log.warning("uplink %s (ifindex %d) re-enslaved into bridge %s", name, index, journal.bridge)
    try:
        _verify(ipr, br_index, journal.bridge, snap, verify_timeout)
    except CNIError as exc:
        # Nothing better to fall back to: the node's addresses live on the bridge.
        log.error("after re-enslaving %s: %s", name, exc.msg)


# --------------------------------------------------------------------------- snapshot


def capture(ipr: Any, ifname: str, bridge: str | None) -> UplinkSnapshot:
    """Everything that makes ``ifname`` the node's interface, as plain data."""
    index = _lookup(ipr, ifname)
    if index is None:
        raise CNIError(ErrorCode.INVALID_CONFIG, f"uplinkInterface {ifname!r} does not exist")
    link = _link(ipr, index)
    names = {int(lk["index"]): str(lk.get_attr("IFLA_IFNAME")) for lk in ipr.get_links()}
    addresses = tuple(_addr_from_msg(m) for m in ipr.addr("dump") if m["index"] == index)
    routes = tuple(r for r in _all_routes(ipr, names) if ifname in r.devices)
    neighbours = tuple(
        NeighSnap(family=int(m["family"]), dst=str(m.get_attr("NDA_DST")), lladdr=str(lladdr))
        for m in ipr.neigh("dump")
        if m["ifindex"] == index
        and m["state"] & NUD_PERMANENT
        and (lladdr := m.get_attr("NDA_LLADDR"))
        and m.get_attr("NDA_DST")
    )
    pre = None
    br_index = _lookup(ipr, bridge) if bridge else None
    if br_index is not None:
        br = _link(ipr, br_index)
        pre = BridgePre(
            ifindex=br_index,
            mac=str(br.get_attr("IFLA_ADDRESS")),
            mtu=int(br.get_attr("IFLA_MTU")),
            accept_ra=read_sysctl(f"net/ipv6/conf/{bridge}/accept_ra"),
        )
    return UplinkSnapshot(
        uplink=ifname,
        ifindex=index,
        mac=str(link.get_attr("IFLA_ADDRESS")),
        mtu=int(link.get_attr("IFLA_MTU")),
        up=bool(link["flags"] & IFF_UP),
        addresses=addresses,
        routes=routes,
        neighbours=neighbours,
        accept_ra=read_sysctl(f"net/ipv6/conf/{ifname}/accept_ra"),
        autoconf=read_sysctl(f"net/ipv6/conf/{ifname}/autoconf"),
        bridge_pre=pre,
        taken_at=time.time(),
        disable_ipv6=read_sysctl(f"net/ipv6/conf/{ifname}/disable_ipv6"),
    )


def _addr_from_msg(m: Any) -> AddrSnap:
    family = int(m["family"])
    local, address = m.get_attr("IFA_LOCAL"), m.get_attr("IFA_ADDRESS")
    own = local or address
    peer = address if local and address and address != local else None
    cache = m.get_attr("IFA_CACHEINFO") or {}
    valid, preferred = (
        cache.get("ifa_valid", INFINITY_LIFE_TIME),
        cache.get("ifa_preferred", INFINITY_LIFE_TIME),
    )
    return AddrSnap(
        family=family,
        address=str(own),
        prefixlen=int(m["prefixlen"]),
        scope=int(m["scope"]),
        flags=int(m.get_attr("IFA_FLAGS") or m["flags"]),
        label=m.get_attr("IFA_LABEL"),
        peer=peer,
        broadcast=m.get_attr("IFA_BROADCAST"),
        valid_lft=None if valid == INFINITY_LIFE_TIME else int(valid),
        preferred_lft=None if preferred == INFINITY_LIFE_TIME else int(preferred),
        proto=m.get_attr("IFA_PROTO"),
        rt_priority=m.get_attr("IFA_RT_PRIORITY"),
    )


def _all_routes(ipr: Any, names: dict[int, str] | None = None) -> list[RouteSnap]:
    if names is None:
        names = {int(lk["index"]): str(lk.get_attr("IFLA_IFNAME")) for lk in ipr.get_links()}
    out = []
    for m in ipr.route("dump"):
        if m["family"] not in (AF_INET, AF_INET6):
            continue
        metrics = []
        raw_metrics = m.get_attr("RTA_METRICS")
        for key, value in raw_metrics["attrs"] if raw_metrics else ():
            if isinstance(value, int) and key.startswith("RTAX_"):
                metrics.append((key[5:].lower(), value))
        hops = []
        for nh in m.get_attr("RTA_MULTIPATH") or ():
            hops.append(
                NextHop(
                    gateway=nh.get_attr("RTA_GATEWAY"),
                    dev=names.get(int(nh["ifindex"])),
                    hops=int(nh["hops"]),
                    flags=int(nh["flags"]),
                )
            )
        oif = m.get_attr("RTA_OIF")
        dst = m.get_attr("RTA_DST")
        out.append(
            RouteSnap(
                family=int(m["family"]),
                dst=str(dst) if dst is not None and m["dst_len"] else None,
                dst_len=int(m["dst_len"]),
                table=int(m.get_attr("RTA_TABLE") or m["table"]),
                proto=int(m["proto"]),
                scope=int(m["scope"]),
                type=int(m["type"]),
                flags=int(m["flags"]) & 0xFF,
                priority=m.get_attr("RTA_PRIORITY"),
                tos=int(m["tos"]),
                gateway=m.get_attr("RTA_GATEWAY"),
                dev=names.get(int(oif)) if oif is not None else None,
                prefsrc=m.get_attr("RTA_PREFSRC"),
                src=m.get_attr("RTA_SRC"),
                src_len=int(m["src_len"]),
                metrics=tuple(metrics),
                pref=m.get_attr("RTA_PREF"),
                multipath=tuple(hops),
            )
        )
    return out


# --------------------------------------------------------------------------- netlink verbs


def _addr_add(ipr: Any, index: int, a: AddrSnap, label: str | None) -> None:
    kwargs: dict[str, Any] = {
        "index": index,
        "family": a.family,
        "address": a.peer or a.address,
        "prefixlen": a.prefixlen,
        "scope": a.scope,
        "flags": a.settable_flags(),
    }
    if a.family == AF_INET or a.peer:
        kwargs["local"] = a.address
    if a.family == AF_INET and label:
        kwargs["label"] = label
    if a.broadcast:
        kwargs["broadcast"] = a.broadcast
    if a.rt_priority:
        kwargs["rt_priority"] = a.rt_priority
    if a.valid_lft is not None:
        # Lifetimes are replayed as snapshotted: whoever manages them (DHCP client, RA)
        # stays their owner; see _warn_finite_lifetimes.
        kwargs["valid_lft"] = a.valid_lft
        kwargs["preferred_lft"] = min(a.preferred_lft or 0, a.valid_lft)
    try:
        ipr.addr("add", **kwargs)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise


def _addr_del(ipr: Any, index: int, a: AddrSnap) -> None:
    kwargs: dict[str, Any] = {
        "index": index,
        "family": a.family,
        "address": a.peer or a.address,
        "prefixlen": a.prefixlen,
    }
    if a.family == AF_INET or a.peer:
        kwargs["local"] = a.address
    try:
        ipr.addr("del", **kwargs)
    except NetlinkError as exc:
        # Already gone, e.g. a secondary deleted together with its primary.
        if exc.code not in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH, errno.ENODEV):
            raise


def _route_kwargs(r: RouteSnap, names: dict[str, int]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "family": r.family,
        "dst_len": r.dst_len,
        "table": r.table,
        "proto": r.proto,
        "scope": r.scope,
        "type": r.type,
        "tos": r.tos,
    }
    if r.dst:
        kwargs["dst"] = r.dst
    if r.src:
        kwargs["src"] = r.src
        kwargs["src_len"] = r.src_len
    if r.priority is not None:
        kwargs["priority"] = r.priority
    if r.gateway:
        kwargs["gateway"] = r.gateway
    if r.dev:
        kwargs["oif"] = names[r.dev]
    if r.prefsrc:
        kwargs["prefsrc"] = r.prefsrc
    if r.flags & ~_RTNH_STATE_FLAGS:
        kwargs["flags"] = r.flags & ~_RTNH_STATE_FLAGS
    if r.metrics:
        kwargs["metrics"] = dict(r.metrics)
    if r.pref is not None:
        kwargs["pref"] = r.pref
    if r.multipath:
        kwargs["multipath"] = [
            {
                "gateway": nh.gateway,
                "ifindex": names.get(nh.dev or "", 0),
                "hops": nh.hops,
                "flags": nh.flags & ~_RTNH_STATE_FLAGS,
            }
            for nh in r.multipath
        ]
    return kwargs


def _route_add(ipr: Any, r: RouteSnap, names: dict[str, int]) -> None:
    try:
        ipr.route("add", **_route_kwargs(r, names))
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise CNIError(
                ErrorCode.UPLINK_FAILED,
                f"could not add route {r.describe()}: {_describe(exc)}",
            ) from exc


def _route_del(ipr: Any, r: RouteSnap, names: dict[str, int]) -> None:
    if any(dev not in names for dev in r.devices):
        return
    try:
        ipr.route("del", **_route_kwargs(r, names))
    except NetlinkError as exc:
        if exc.code not in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
            raise


def _neigh_replace(ipr: Any, index: int, neighbours: Iterable[NeighSnap]) -> None:
    for n in neighbours:
        ipr.neigh(
            "replace",
            family=n.family,
            dst=n.dst,
            lladdr=n.lladdr,
            ifindex=index,
            state=NUD_PERMANENT,
        )


# --------------------------------------------------------------------------- verification


def _verify(ipr: Any, br_index: int, brname: str, snap: UplinkSnapshot, timeout: float) -> None:
    """The node must reach its default gateway through the bridge, or the takeover is undone."""
    gw4 = default_gateway(snap.routes, AF_INET)
    gw6 = default_gateway(snap.routes, AF_INET6)
    if gw4 is None and gw6 is None:
        log.info("uplink %s had no default gateway; nothing to verify", snap.uplink)
        return
    gw = gw4 if gw4 is not None else gw6
    assert gw is not None
    # A link-local gateway is only meaningful with its interface (the bridge now).
    scoped = {"oif": br_index} if gw.is_link_local else {}
    got = ipr.route("get", dst=str(gw), **scoped)[0]
    oif = got.get_attr("RTA_OIF")
    if oif != br_index:
        raise CNIError(
            ErrorCode.UPLINK_FAILED,
            f"after takeover the route to gateway {gw} leaves via ifindex {oif}, not {brname}",
        )
    if isinstance(gw, ipaddress.IPv4Address):
        src = got.get_attr("RTA_PREFSRC") or str(primary_ipv4(snap.addresses) or "0.0.0.0")
        if not arp_probe(brname, snap.mac, ipaddress.IPv4Address(src), gw, timeout):
            raise CNIError(
                ErrorCode.UPLINK_FAILED,
                f"gateway {gw} does not answer ARP through bridge {brname} within {timeout:g}s",
            )
    elif not _nd_probe(ipr, br_index, gw, timeout + 2.0):
        raise CNIError(
            ErrorCode.UPLINK_FAILED,
            f"gateway {gw} is not reachable (neighbour discovery) through bridge {brname}",
        )
    log.info("gateway %s answers through bridge %s", gw, brname)


def arp_probe(
    ifname: str,
    mac: str,
    src: ipaddress.IPv4Address,
    target: ipaddress.IPv4Address,
    timeout: float,
) -> bool:
    """Ask ``target`` for its MAC on ``ifname`` (raw ARP, retried); True once it answers.

    Our own request rather than the kernel's neighbour machinery: a neighbour entry can sit
    in STALE/DELAY for seconds without a fresh confirmation, ARP answers in milliseconds.
    """
    request = struct.pack(
        "!HHBBH6s4s6s4s",
        1,  # Ethernet
        0x0800,
        6,
        4,
        1,  # request
        bytes.fromhex(mac.replace(":", "")),
        src.packed,
        b"\x00" * 6,
        target.packed,
    )
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((ifname, ETH_P_ARP))
        next_send = 0.0
        while (now := time.monotonic()) < deadline:
            if now >= next_send:
                sock.sendto(request, (ifname, ETH_P_ARP, 0, 0, b"\xff" * 6))
                next_send = now + 0.3
            # A socket timeout (poll), not select(): the agent raises its open-file limit and
            # select() fails on descriptors numbered 1024 and above.
            sock.settimeout(max(0.001, min(next_send, deadline) - now))
            try:
                reply = sock.recv(128)
            except TimeoutError:
                continue
            if len(reply) >= 28:
                op = struct.unpack("!H", reply[6:8])[0]
                if op == 2 and reply[14:18] == target.packed:
                    return True
    return False


def _nd_probe(ipr: Any, br_index: int, gw: ipaddress.IPv6Address, timeout: float) -> bool:
    """Let the kernel resolve ``gw`` on the bridge (a datagram to the discard port triggers it)."""
    deadline = time.monotonic() + timeout
    scope = br_index if gw.is_link_local else 0
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        while time.monotonic() < deadline:
            # An entry learned from a router advertisement sits in STALE, and traffic
            # then waits in DELAY for delay_first_probe_time (5 s) before any probe:
            # dropped, the kernel resolves the gateway afresh (milliseconds).
            _forget_unconfirmed(ipr, br_index, gw)
            # Fails with no usable source address while DAD is still running: retried.
            with contextlib.suppress(OSError):
                sock.sendto(b"", (str(gw), 9, 0, scope))
            for _ in range(10):
                for m in ipr.neigh("dump", family=AF_INET6):
                    if (
                        m["ifindex"] == br_index
                        and m.get_attr("NDA_DST") == str(gw)
                        and m["state"] & (NUD_REACHABLE | NUD_PERMANENT | NUD_NOARP)
                    ):
                        return True
                time.sleep(0.05)
    return False


def _forget_unconfirmed(ipr: Any, index: int, gw: ipaddress.IPv6Address) -> None:
    for m in ipr.neigh("dump", family=AF_INET6):
        if (
            m["ifindex"] == index
            and m.get_attr("NDA_DST") == str(gw)
            and m["state"] & (NUD_STALE | NUD_DELAY | NUD_FAILED)
        ):
            with contextlib.suppress(NetlinkError):
                ipr.neigh("del", family=AF_INET6, dst=str(gw), ifindex=index)


# --------------------------------------------------------------------------- IPv6 on the port


def _bridge_accept_ra(snap: UplinkSnapshot) -> str | None:
    """The bridge takes over the uplink's RA acceptance, made immune to forwarding.

    A host with IPv6 forwarding on ignores RAs unless ``accept_ra=2``: an uplink that
    accepted them (1, forwarding off) hands the bridge 2, so the node keeps its SLAAC
    prefix and default route even when forwarding is turned on later (2 acts as 1 while
    forwarding is off). An uplink that ignored RAs, or forwarded, keeps its value.
    """
    forwarding = read_sysctl(f"net/ipv6/conf/{snap.uplink}/forwarding")
    if snap.accept_ra == "1" and forwarding != "1":
        return "2"
    return snap.accept_ra


def _quiet_port(index: int, name: str, snap: UplinkSnapshot) -> None:
    """Before enslaving: the port must never autoconfigure, learn RAs or hold IPv6 routes.

    RA-learned routes on the port (``<prefix>/64 dev eth0 proto kernel``, ``default via
    fe80::... dev eth0 proto ra``) would win over the bridge's and break the node's IPv6.
    ``disable_ipv6`` also flushes what the port already learned (addresses and every IPv6
    route through it); frames still cross it at layer 2. Skipped, like the rest of the
    snapshot's IPv6 settings, when the snapshot did not record it.
    """
    for key, value in (("accept_ra", "0"), ("autoconf", "0")):
        write_sysctl(f"net/ipv6/conf/{name}/{key}", value)
    if snap.disable_ipv6 is not None:
        write_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1")
    log.debug("uplink port %s (ifindex %d): IPv6 autoconfiguration and RAs off", name, index)


def _unquiet_port(name: str, snap: UplinkSnapshot) -> None:
    """Give the uplink back its own IPv6 settings (RA settings first, then IPv6 itself)."""
    for key, value in (
        ("accept_ra", snap.accept_ra),
        ("autoconf", snap.autoconf),
        ("disable_ipv6", snap.disable_ipv6),
    ):
        if value is not None:
            write_sysctl(f"net/ipv6/conf/{name}/{key}", value)


# --------------------------------------------------------------------------- helpers


def _state_from_snapshot(bridge: str, snap: UplinkSnapshot) -> UplinkState:
    moved = addresses_to_move(snap)
    return UplinkState(
        bridge=bridge,
        uplink=snap.uplink,
        mac=snap.mac,
        addresses=tuple(a.interface for a in moved),
        node_ipv4=primary_ipv4(moved),
        gateway4=_ipv4_or_none(default_gateway(snap.routes, AF_INET)),
        preconfigured=False,
    )


def _ipv4_or_none(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
) -> ipaddress.IPv4Address | None:
    return ip if isinstance(ip, ipaddress.IPv4Address) else None


def _warn_finite_lifetimes(snap: UplinkSnapshot, bridge: str) -> None:
    for a in addresses_to_move(snap):
        if a.valid_lft is not None and a.family == AF_INET:
            log.warning(
                "address %s/%d on %s has a finite lifetime (%ds): a DHCP client still "
                "configured on %s cannot renew it; configure it on %s instead",
                a.address, a.prefixlen, bridge, a.valid_lft, snap.uplink, bridge,
            )  # fmt: skip


def _in_place(ipr: Any, uplink: str, bridge: str) -> bool:
    up, br = _lookup(ipr, uplink), _lookup(ipr, bridge)
    return up is not None and br is not None and _link(ipr, up).get_attr("IFLA_MASTER") == br


def _lookup(ipr: Any, name: str | None) -> int | None:
    if not name:
        return None
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _link(ipr: Any, index: int) -> Any:
    return ipr.link("get", index=index)[0]


def _name(ipr: Any, index: int) -> str:
    try:
        return str(_link(ipr, index).get_attr("IFLA_IFNAME"))
    except NetlinkError:
        return f"ifindex {index}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, NetlinkError) and len(exc.args) > 1:
        return f"{exc.args[1]} (errno {exc.code})"
    return str(exc) or type(exc).__name__


__all__ = [
    "BridgeSpec",
    "PortCheck",
    "UplinkState",
    "arp_probe",
    "capture",
    "check_port",
    "current_state",
    "ensure_uplink",
    "is_kernel_generated",
    "is_wireless",
    "recover",
    "restore",
    "snapshot_differences",
]
