"""The recorded result of a takeover (:class:`UplinkState`), as status and CHECK see it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..datapath.netlink import RT_SCOPE_UNIVERSE, RTPROT_RA
from . import journal as uj
from .plan import (
    AF_INET,
    AF_INET6,
    UplinkSnapshot,
    addresses_to_move,
    default_gateway,
    primary_ipv4,
)

SYSFS_NET = Path("/sys/class/net")

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
    # The uplink had learned from router advertisements (an RA route, an autoconfigured
    # address) when it was taken over: the LAN announces IPv6, even in the seconds before
    # the bridge hears its first RA (ADD then waits for a pod's RA as RFC 4861 allows).
    lan_ras: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "bridge": self.bridge,
            "uplink": self.uplink,
            "mac": self.mac,
            "addresses": [str(a) for a in self.addresses],
            "node_ipv4": str(self.node_ipv4) if self.node_ipv4 else None,
            "gateway4": str(self.gateway4) if self.gateway4 else None,
            "preconfigured": self.preconfigured,
            "lan_ras": self.lan_ras,
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
            lan_ras=data.get("lan_ras") is True,
        )


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


def state_from_snapshot(bridge: str, snap: UplinkSnapshot) -> UplinkState:
    moved = addresses_to_move(snap)
    return UplinkState(
        bridge=bridge,
        uplink=snap.uplink,
        mac=snap.mac,
        addresses=tuple(a.interface for a in moved),
        node_ipv4=primary_ipv4(moved),
        gateway4=ipv4_or_none(default_gateway(snap.routes, AF_INET)),
        preconfigured=False,
        lan_ras=learned_from_ras(snap),
    )


def learned_from_ras(snap: UplinkSnapshot) -> bool:
    """An RA-learned route, or a global IPv6 address with a finite lifetime (SLAAC)."""
    if any(r.family == AF_INET6 and r.proto == RTPROT_RA for r in snap.routes):
        return True
    return any(
        a.family == AF_INET6 and a.scope == RT_SCOPE_UNIVERSE and a.valid_lft is not None
        for a in snap.addresses
    )


def ipv4_or_none(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
) -> ipaddress.IPv4Address | None:
    return ip if isinstance(ip, ipaddress.IPv4Address) else None
