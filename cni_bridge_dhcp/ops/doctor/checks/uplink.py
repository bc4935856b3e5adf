"""The uplink and the bridge: who holds the node's addresses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..findings import UPLINK, Finding, bad, ok


@dataclass(frozen=True)
class LinkFacts:
    name: str
    kind: str  # "bridge", "veth", "" (physical) ...
    master: str | None
    wireless: bool
    global_addrs: tuple[str, ...]


def check_uplink(
    uplink: str, bridge: str, links: Mapping[str, LinkFacts], takeover_recorded: bool
) -> Finding:
    up = links.get(uplink)
    br = links.get(bridge)
    if up is None:
        return bad(
            UPLINK,
            f"uplink {uplink!r} does not exist on this node",
            "Set uplinkInterface in the network config (and UPLINK in the DaemonSet's "
            "ConfigMap) to the node's LAN interface (see `ip -br link`), or pass --uplink.",
        )
    if up.wireless:
        return bad(
            UPLINK,
            f"uplink {uplink!r} is a Wi-Fi interface: a station cannot be bridged (the access "
            "point drops frames from MAC addresses that did not associate)",
            "Use a wired interface as uplinkInterface; for Wi-Fi nodes use a routed or "
            "macvlan-free setup instead of this plugin.",
        )
    if br is None:
        if takeover_recorded:
            return bad(
                UPLINK,
                f"the agent recorded a takeover into bridge {bridge!r}, but the bridge is gone",
                "Something deleted the bridge (a network manager restart?): see the "
                "network-manager check, then restart the agent; the next pod ADD builds it "
                "again.",
            )
        return ok(UPLINK, f"{uplink} not taken over yet (happens at the first pod ADD)")
    if br.kind != "bridge":
        return bad(
            UPLINK,
            f"{bridge!r} exists but is a {br.kind or 'non-bridge'} link",
            "Delete or rename that link, or set a different bridge name in the network config.",
        )
    if up.master != bridge:
        where = f"enslaved to {up.master!r}" if up.master else "not a port of any bridge"
        return bad(
            UPLINK,
            f"uplink {uplink!r} is {where}, so pods on {bridge!r} are cut off the LAN",
            f"Something released it (a network manager re-applying its config? see the "
            f"network-manager check). Put it back with `ip link set {uplink} master {bridge}` "
            f"(the node's addresses stay on {bridge}), and make the network manager configure "
            f"the bridge instead of {uplink}.",
        )
    if up.global_addrs:
        return bad(
            UPLINK,
            f"uplink {uplink!r} is a port of {bridge!r} but holds addresses "
            f"{', '.join(up.global_addrs)}; addresses on a bridge port are unusable",
            f"A network manager or DHCP client re-configured {uplink} (see the network-manager "
            f"check). Remove them: `ip addr flush dev {uplink} scope global`; the node's "
            f"addresses belong on {bridge}.",
        )
    return ok(UPLINK, f"{uplink} is a port of {bridge}")


def global_addresses(addr_info: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    out = []
    for a in addr_info:
        if a.get("scope") == "global" and a.get("local"):
            out.append(f"{a['local']}/{a.get('prefixlen')}")
    return tuple(out)
