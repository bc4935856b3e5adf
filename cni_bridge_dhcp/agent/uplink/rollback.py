"""Back to the snapshot: after a failed or interrupted takeover, and ``uplink restore``.

Rollback converges on the snapshot idempotently instead of undoing steps one by one, so
it is correct whichever step was interrupted, and is itself safe to interrupt and re-run.
A restore never cuts the node off: it refuses what the snapshot lacks, and rolls forward
onto the bridge when the result differs from the snapshot.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from ...cni.errors import CNIError, ErrorCode
from ..datapath.bridge import BridgeSpec, bridge_ports, pin_mtu
from ..datapath.netlink import (
    IFF_UP,
    RT_SCOPE_UNIVERSE,
    Netlink,
    NetlinkError,
    describe,
    get_link,
    link_kind,
    lookup,
    node_ipr,
)
from ..datapath.sysctl import write_sysctl
from . import dhcpclients
from . import journal as uj
from .capture import addr_from_msg, capture, snapshot_differences
from .kernel import addr_add, addr_del, neigh_replace, route_add, route_del
from .plan import (
    AF_INET,
    AF_INET6,
    AddrSnap,
    BridgePre,
    RouteSnap,
    UplinkSnapshot,
    addresses_to_move,
    is_kernel_ll,
    replay_plan,
)
from .port import unquiet_port
from .state import UplinkState, state_from_snapshot
from .steps import take_over
from .verify import verify_gateway

log = logging.getLogger(__name__)


def roll_back_interrupted(ipr: Netlink, state_dir: Path, journal: uj.Journal) -> str:
    was = journal.phase
    last = journal.steps[-1] if journal.steps else "none"
    if journal.snapshot is None:
        uj.archive(state_dir, "interrupted journal without a snapshot")
        return "archived an interrupted uplink journal that had no snapshot"
    journal.phase = uj.RESTORING if was == uj.RESTORING else uj.ROLLING_BACK
    journal.error = journal.error or f"interrupted ({was}) after step {last}"
    uj.save(state_dir, journal)
    problems = return_to_snapshot(ipr, journal, delete_any_bridge=was == uj.RESTORING)
    journal.phase = uj.RESTORED if was == uj.RESTORING else uj.ROLLED_BACK
    uj.save(state_dir, journal)
    outcome = (
        f"rolled uplink {journal.uplink} back out of bridge {journal.bridge} to its snapshot "
        f"(the takeover was interrupted: {was}, last step {last})"
    )
    if problems:
        outcome += "; differences remain: " + "; ".join(problems)
    return outcome


def return_to_snapshot(ipr: Netlink, journal: uj.Journal, *, delete_any_bridge: bool) -> list[str]:
    """Converge the node onto the journal's snapshot; idempotent, whatever step was reached.

    Returns the differences still visible afterwards (empty when the snapshot is intact).
    """
    snap = journal.snapshot
    assert snap is not None
    uplink, brname = snap.uplink, journal.bridge
    up_index = lookup(ipr, uplink)
    if up_index is None:
        raise CNIError(ErrorCode.UPLINK_FAILED, f"uplink {uplink!r} has disappeared")
    br_index = lookup(ipr, brname)
    if br_index is not None and link_kind(get_link(ipr, br_index))[0] != "bridge":
        br_index = None  # not ours to touch
    plan = replay_plan(snap.routes, uplink)
    moved = addresses_to_move(snap)
    if br_index is not None:
        moved = _live_lifetimes(ipr, br_index, moved)
    names = {uplink: up_index}
    if br_index is not None:
        names[brname] = br_index
        for route in reversed(plan):
            try:
                route_del(ipr, route.on_device(uplink, brname), names)
            except NetlinkError as exc:
                log.debug(
                    "rollback: route %s not removed from %s: %s", route.describe(), brname, exc
                )
        if get_link(ipr, up_index).get_attr("IFLA_MASTER") == br_index:
            ipr.link("set", index=up_index, master=0)
    unquiet_port(uplink, snap)
    _restore_addresses(ipr, up_index, snap, moved)
    if br_index is not None:
        for addr in reversed(moved):
            addr_del(ipr, br_index, addr)
    link = get_link(ipr, up_index)
    if link.get_attr("IFLA_ADDRESS") != snap.mac:
        ipr.link("set", index=up_index, address=snap.mac)
    if link.get_attr("IFLA_MTU") != snap.mtu:
        ipr.link("set", index=up_index, mtu=snap.mtu)
    if bool(link["flags"] & IFF_UP) != snap.up:
        ipr.link("set", index=up_index, state="up" if snap.up else "down")
    for route in plan:
        route_add(ipr, route, names)
    neigh_replace(ipr, up_index, snap.neighbours)
    if br_index is not None:
        _settle_bridge(ipr, br_index, brname, uplink, snap.bridge_pre, delete_any_bridge)
    return snapshot_differences(snap, capture(ipr, uplink, None))


def _live_lifetimes(ipr: Netlink, br_index: int, moved: list[AddrSnap]) -> list[AddrSnap]:
    """The moved addresses with the lifetimes they have on the bridge now: a DHCP lease the
    agent kept alive goes back with its remaining lifetime, not the snapshot's stale one."""
    live = {
        (a.address, a.prefixlen): a
        for a in (addr_from_msg(m) for m in ipr.addr("dump") if m["index"] == br_index)
    }
    out = []
    for a in moved:
        now = live.get((a.address, a.prefixlen))
        if a.valid_lft is not None and now is not None and now.valid_lft is not None:
            a = replace(a, valid_lft=now.valid_lft, preferred_lft=now.preferred_lft)
        out.append(a)
    return out


def _restore_addresses(
    ipr: Netlink, index: int, snap: UplinkSnapshot, moved: list[AddrSnap]
) -> None:
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
        for a in (addr_from_msg(m) for m in ipr.addr("dump") if m["index"] == index)
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
                addr_del(ipr, index, a)
        for addr in moved:
            if addr.family == family:
                addr_add(ipr, index, addr, addr.label)


def _settle_bridge(
    ipr: Netlink, index: int, name: str, uplink: str, pre: BridgePre | None, delete_any: bool
) -> None:
    ports = [p for p in bridge_ports(ipr, index) if p != uplink]
    if not ports and (pre is None or delete_any):
        ipr.link("del", index=index)
        log.info("deleted bridge %s", name)
        return
    if pre is not None:
        link = get_link(ipr, index)
        if link.get_attr("IFLA_ADDRESS") != pre.mac:
            ipr.link("set", index=index, address=pre.mac)
        pin_mtu(ipr, index, int(link.get_attr("IFLA_MTU")), pre.mtu, fresh=False)
        for key, value in (("accept_ra", pre.accept_ra), ("accept_dad", pre.accept_dad)):
            if value is not None:
                write_sysctl(f"net/ipv6/conf/{name}/{key}", value)
    else:
        log.warning("bridge %s kept: pods are still attached (%s)", name, ", ".join(ports))


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
        state = state_from_snapshot(journal.bridge, journal.snapshot)
        with node_ipr() as ipr:
            if journal.phase in uj.INTERRUPTED:
                roll_back_interrupted(ipr, state_dir, journal)
                return state
            br = lookup(ipr, journal.bridge)
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
            problems = return_to_snapshot(ipr, journal, delete_any_bridge=True)
            if not problems:
                problems = _verify_restored(ipr, journal, verify_timeout)
            if problems:
                _roll_forward(ipr, state_dir, journal, problems, verify_timeout)
            journal.phase = uj.RESTORED
            journal.error = None
            uj.save(state_dir, journal)
        _hand_back_lease(state_dir)
        log.info("uplink %s restored from bridge %s", journal.uplink, journal.bridge)
        return state


def _hand_back_lease(state_dir: Path) -> None:
    """The DHCP client paused at the takeover runs again (its address is back on the
    uplink); the agent's node lease keeper sees the record gone and stops."""
    record = dhcpclients.load_record(state_dir)
    if record is None:
        return
    resumed = dhcpclients.resume(record.paused)
    if resumed:
        log.info("uplink restore: resumed %s", ", ".join(resumed))
    dhcpclients.remove_record(state_dir)


def _refuse_stripping(ipr: Netlink, journal: uj.Journal) -> None:
    """Refuse (nothing changed) a restore that would remove what the node lives on.

    Everything of the node's on the bridge must be in the snapshot: an address or route
    it lacks (a snapshot taken of an emptied uplink, or something configured on the bridge
    since) would be deleted with the bridge. RA-learned state is exempt: it comes back on
    the uplink once the uplink accepts RAs again.
    """
    snap = journal.snapshot
    assert snap is not None
    br_index = lookup(ipr, journal.bridge)
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

    def key(r: RouteSnap) -> tuple[object, ...]:
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


def _verify_restored(ipr: Netlink, journal: uj.Journal, timeout: float) -> list[str]:
    """After a restore the node must reach its default gateway through the uplink."""
    snap = journal.snapshot
    assert snap is not None
    index = lookup(ipr, snap.uplink)
    if index is None:
        return [f"uplink {snap.uplink} has disappeared"]
    if not snap.up:
        return []  # it was down before the takeover: nothing can answer through it
    try:
        verify_gateway(ipr, index, snap.uplink, snap, timeout)
    except CNIError as exc:
        return [exc.msg]
    return []


def _roll_forward(
    ipr: Netlink, state_dir: Path, journal: uj.Journal, problems: list[str], verify_timeout: float
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
    journal.port_ifindex = lookup(ipr, snap.uplink)
    uj.save(state_dir, journal)
    try:
        # Not conditional on the gateway answering: the bridge is how the node was
        # connected before the restore, whether or not the gateway answers right now.
        take_over(ipr, BridgeSpec(journal.bridge), journal, state_dir, 0, verify=False)
    except Exception as exc:
        journal.phase = uj.RESTORED
        journal.error = f"restore: {reason}; back onto the bridge: {describe(exc)}"
        uj.save(state_dir, journal)
        raise CNIError(
            ErrorCode.UPLINK_FAILED,
            f"uplink {snap.uplink!r} restored with differences from its snapshot, and "
            f"putting it back on bridge {journal.bridge!r} failed too",
            journal.error + "; check the node's addresses and routes by hand",
        ) from exc
    journal.phase = uj.DONE
    journal.state = state_from_snapshot(journal.bridge, snap).to_dict()
    journal.error = f"restore rolled forward: {reason}"
    uj.save(state_dir, journal)
    br_index = lookup(ipr, journal.bridge)
    if br_index is not None:
        try:
            verify_gateway(ipr, br_index, journal.bridge, snap, verify_timeout)
        except CNIError as exc:
            reason += f"; through the bridge too: {exc.msg}"
    raise CNIError(
        ErrorCode.UPLINK_FAILED,
        f"uplink restore of {snap.uplink!r} did not give back its pre-takeover state; the "
        f"node was put back on bridge {journal.bridge!r} (takeover still recorded)",
        f"{reason}; fix the cause and run `cni-bridge-dhcp uplink restore` again",
    )
