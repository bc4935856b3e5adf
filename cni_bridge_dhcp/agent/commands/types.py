"""What the command handlers are given: the request, the node's datapath, and ``Services``.

The handlers (main_role, ipam_role, lease_follow, vanished) depend on the ``Services``
protocol, never on the agent class: ``agent/service.py`` implements it and imports the
handlers, so the dependency runs one way and a unit test can hand the handlers a fake.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ..config import NetConf
from ..datapath.vethreaper import VethReaper
from ..dhcp import LeaseManager
from ..dhcp.v6.manager import Lease6Manager
from ..firewall.registry import FirewallRegistry
from ..state.addressbook import AddressBook
from ..state.attachments import AttachmentStore

Role = Literal["main", "ipam"]


@dataclass
class Request:
    op: str
    cni_version: str
    container_id: str
    netns: str
    ifname: str
    cni_path: str
    args: dict[str, str]
    # The network config as the runtime sent it: JSON, checked by parse_netconf.
    raw: dict[str, Any]
    netns_fd: int | None = None
    role: Role = "main"

    @property
    def cni_args(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.args.items())


@dataclass(frozen=True)
class Datapath:
    """The bridge (and uplink) a network's pods attach to, as ensure_datapath found it."""

    bridge_index: int
    bridge_mac: str
    node_ip: ipaddress.IPv4Address | None
    uplink: str | None
    mtu: int | None
    lan_ras: bool = False  # UplinkState.lan_ras: the LAN announced IPv6 at the takeover


class Services(Protocol):
    """Everything of the agent the handlers use; nothing else."""

    store: AttachmentStore
    addressbook: AddressBook
    firewall: FirewallRegistry
    veths: VethReaper

    @property
    def leases(self) -> LeaseManager: ...

    @property
    def leases6(self) -> Lease6Manager: ...

    async def ensure_datapath(self, conf: NetConf) -> Datapath: ...

    async def bridge_index(self, name: str) -> int | None: ...

    async def uplink_problem(
        self, conf: NetConf, *, before_takeover_ok: bool = False
    ) -> str | None: ...
