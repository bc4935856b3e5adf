"""The node's bridge: create-or-verify, with the settings pods need.

Runs in the agent's own (node) network namespace.

Differences from the reference plugin's ``ensureBridge``, and why:

- STP off and forward delay 0 are enforced (the reference leaves kernel defaults): with
  STP on, a new port spends 2 x forward_delay (30 s by default) in listening/learning and
  the pod's first DHCP DISCOVER is dropped. A pre-configured bridge (netplan enables STP by
  default) is switched too, and that is logged.
- ``accept_ra=0`` is set when we create the bridge (the reference sets it on every call):
  once the node's uplink has been taken over into the bridge, the bridge *is* the node's
  LAN interface and carries the uplink's accept_ra; resetting it on every ADD would make
  the node lose its RA-learned IPv6 default route.
- A configured MTU is pinned (the kernel then stops lowering the bridge MTU to the
  smallest port's whenever a port joins), so a pod veth cannot shrink the node's MTU.
- MTU, promiscuity and vlan filtering are set only on a bridge this call creates. A
  bridge that exists already may carry the node's addresses (taken over, pre-configured,
  or made by another config naming the same bridge): changing its MTU is visible to the
  node's traffic and below 1280 removes its IPv6 addresses. A config's ``mtu`` then
  applies to the pod veth only (``veth_mtu``), and must not exceed the bridge's.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from typing import Any

from ...cni.errors import CNIError, ErrorCode
from ...cni.names import valid_ifname
from .netlink import (
    EEXIST,
    IFF_PROMISC,
    IFF_UP,
    Message,
    Netlink,
    NetlinkError,
    get_link,
    link_kind,
    lookup,
    node_ipr,
)
from .sysctl import write_sysctl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BridgeSpec:
    name: str
    mtu: int | None = None
    promisc: bool = False
    vlan_filtering: bool = False
    preserve_default_vlan: bool = True


def ensure_bridge(spec: BridgeSpec, *, mac: str | None = None, ipr: Netlink | None = None) -> int:
    """Create or verify the bridge ``spec.name``; return its ifindex.

    ``mac`` is used only when the bridge is created (so its IPv6 link-local address derives
    from it). An existing link of another kind is CNIError(7) naming it.
    """
    if not valid_ifname(spec.name):
        raise CNIError(
            ErrorCode.INVALID_CONFIG, f"bridge name {spec.name!r} is not a valid interface name"
        )
    if spec.mtu is not None and not 68 <= spec.mtu <= 65535:
        raise CNIError(ErrorCode.INVALID_CONFIG, f"mtu {spec.mtu} is out of range (68-65535)")
    if ipr is None:
        with node_ipr() as own:
            return _ensure(own, spec, mac)
    return _ensure(ipr, spec, mac)


def _ensure(ipr: Netlink, spec: BridgeSpec, mac: str | None) -> int:
    name = spec.name
    created = False
    found = lookup(ipr, name)
    if found is None:
        kwargs: dict[str, object] = {
            "ifname": name,
            "kind": "bridge",
            "br_stp_state": 0,
            "br_forward_delay": 0,
        }
        if mac:
            kwargs["address"] = mac
        if spec.vlan_filtering:
            kwargs["br_vlan_filtering"] = 1
        try:
            ipr.link("add", **kwargs)
            created = True
            log.info("created bridge %s", name)
        except NetlinkError as exc:
            if exc.code != EEXIST:
                raise _netlink_error(f"could not create bridge {name!r}", exc, spec) from exc
        found = lookup(ipr, name)
        if found is None:
            raise CNIError(ErrorCode.INTERNAL, f"bridge {name!r} vanished right after creation")
    index = found
    link = get_link(ipr, index)
    kind, data = link_kind(link)
    if kind != "bridge":
        raise CNIError(
            ErrorCode.INVALID_CONFIG,
            f"bridge {name!r} already exists but is not a bridge",
            f"it is a {kind} link" if kind else "it is a link without a kind (physical?)",
        )
    try:
        _apply(ipr, index, link, data, spec, created)
    except NetlinkError as exc:
        raise _netlink_error(f"could not configure bridge {name!r}", exc, spec) from exc
    if created:
        # An agent-made bridge carries no node addresses: its routes are ours to manage.
        write_sysctl(f"net/ipv6/conf/{name}/accept_ra", "0")
    return index


def _apply(
    ipr: Netlink, index: int, link: Message, data: dict[str, Any], spec: BridgeSpec, created: bool
) -> None:
    name = spec.name
    stp, delay = data.get("IFLA_BR_STP_STATE", 0), data.get("IFLA_BR_FORWARD_DELAY", 0)
    if stp or delay:
        if not created:
            log.info(
                "bridge %s: turning STP off and forward delay to 0 (were %s, %s)", name, stp, delay
            )
        ipr.link("set", index=index, kind="bridge", br_stp_state=0, br_forward_delay=0)
    flags = int(link["flags"])
    if created:
        if spec.vlan_filtering and not data.get("IFLA_BR_VLAN_FILTERING"):
            ipr.link("set", index=index, kind="bridge", br_vlan_filtering=1)
        if spec.mtu is not None:
            pin_mtu(ipr, index, int(link.get_attr("IFLA_MTU")), spec.mtu, fresh=True)
        if spec.promisc and not flags & IFF_PROMISC:
            ipr.link("set", index=index, flags=IFF_PROMISC, change=IFF_PROMISC)
    else:
        _keep_existing(link, data, spec)
    if not flags & IFF_UP:
        ipr.link("set", index=index, state="up")


def _keep_existing(link: Message, data: dict[str, Any], spec: BridgeSpec) -> None:
    """An existing bridge keeps its settings; say what of the config it does not get."""
    name = spec.name
    if spec.vlan_filtering and not data.get("IFLA_BR_VLAN_FILTERING"):
        # Switching it on would cut every untagged port but the pods off the bridge.
        raise CNIError(
            ErrorCode.INVALID_CONFIG,
            f"bridge {name!r} exists without vlan filtering, which vlan/vlanTrunk need",
            f"the agent does not reconfigure a bridge it did not create for this config; "
            f"enable it (ip link set {name} type bridge vlan_filtering 1) or use another bridge",
        )
    current = int(link.get_attr("IFLA_MTU"))
    if spec.mtu is not None and spec.mtu != current:
        log.info(
            "bridge %s keeps MTU %d: mtu %d applies to the pod veth only", name, current, spec.mtu
        )
    if spec.promisc and not int(link["flags"]) & IFF_PROMISC:
        log.info("bridge %s exists: promiscMode not applied to it", name)


def veth_mtu(mtu: int | None, bridge_mtu: int, bridge: str) -> int:
    """The pod veth's MTU: the config's, which the bridge (and the LAN) must carry."""
    if mtu is None:
        return bridge_mtu
    if mtu > bridge_mtu:
        raise CNIError(
            ErrorCode.INVALID_CONFIG,
            f"mtu {mtu} is larger than the MTU {bridge_mtu} of bridge {bridge!r}",
            "frames the pod sends above the bridge's MTU would be dropped; the agent does "
            "not change an existing bridge's MTU: lower mtu, or raise the bridge's (and "
            "its uplink's) yourself",
        )
    return mtu


def pin_mtu(ipr: Netlink, index: int, current: int, mtu: int, *, fresh: bool) -> None:
    """Set the bridge MTU so the kernel keeps it (BROPT_MTU_SET_BY_USER).

    Only an actual MTU change marks it as user-set (the kernel skips a no-op change);
    without that mark the kernel re-derives the bridge MTU from its smallest port on every
    enslave. A bridge created with the wanted MTU is therefore nudged through a one-off
    neighbour value. Never done to a bridge in use: an MTU change on a live interface is
    visible to its traffic (and below 1280 would drop its IPv6 addresses).
    """
    if current != mtu:
        ipr.link("set", index=index, mtu=mtu)
    elif fresh:
        ipr.link("set", index=index, mtu=mtu + 1 if mtu < 65535 else mtu - 1)
        ipr.link("set", index=index, mtu=mtu)


def bridge_ports(ipr: Netlink, bridge_index: int) -> list[str]:
    return [
        str(link.get_attr("IFLA_IFNAME"))
        for link in ipr.get_links()
        if link.get_attr("IFLA_MASTER") == bridge_index
    ]


def _netlink_error(what: str, exc: NetlinkError, spec: BridgeSpec) -> CNIError:
    if exc.code == errno.EOPNOTSUPP and spec.vlan_filtering:
        return CNIError(
            ErrorCode.INVALID_CONFIG,
            f"vlan filtering on bridge {spec.name!r} is not supported by this kernel",
            "vlan/vlanTrunk need CONFIG_BRIDGE_VLAN_FILTERING",
        )
    return CNIError(ErrorCode.INTERNAL, f"{what}: {exc.args[1] if len(exc.args) > 1 else exc}")
