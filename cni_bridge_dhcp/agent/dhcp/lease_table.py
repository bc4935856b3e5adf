"""The DHCPv4 LeaseManager's shared state on top of ``lease_book`` (the table of held
leases, per-key locks, the journal, the upkeep loop): the steps every part of the manager
uses (the client for a lease, log a state, expect a server's MAC). ``releases``, ``upkeep``
and ``manager`` build on it in that order.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

from ...cni.errors import CNIError
from . import podif
from .client import DhcpClient
from .clock import Clock
from .identity import wire_client_id
from .journal import Journal
from .lease import Lease, LeaseRequest, LeaseState
from .lease_book import Entry as BookEntry
from .lease_book import LeaseBook
from .messages import Identity
from .servermacs import ServerMacs
from .session import Timing
from .transport import Target, Transport, TransportFactory

log = logging.getLogger(__name__)

# (key, old, new): new is None when the lease is lost, old is None when it is regained.
ChangeHook = Callable[[str, Lease | None, Lease | None], Awaitable[None]]
# Opens a send-only transport on the node that speaks as a departed pod (node_release).
NodeTransports = Callable[[Lease], Awaitable[Transport]]


Entry = BookEntry[Lease, DhcpClient]


class LeaseTable(LeaseBook[Lease, DhcpClient]):
    def __init__(
        self,
        state_dir: Path,
        *,
        clock: Clock,
        timing: Timing,
        transports: TransportFactory,
        node_transports: NodeTransports | None,
        on_change: ChangeHook | None,
        reacquire_timeout: float,
        reacquire_max_backoff: float,
        rng: random.Random,
    ) -> None:
        super().__init__(
            Journal(state_dir),
            clock=clock,
            on_change=on_change,
            reacquire_max_backoff=reacquire_max_backoff,
            rng=rng,
        )
        self.server_macs = ServerMacs(state_dir)
        self.timing = timing
        self.transports = transports
        self.node_transports = node_transports
        self.reacquire_timeout = reacquire_timeout

    def _client(self, where: Lease | LeaseRequest) -> DhcpClient:
        return DhcpClient(
            identity_of(where),
            label=where.key,
            clock=self.clock,
            timing=self._timing_for(where),
            rng=self.rng,
        )

    def _timing_for(self, lease: Lease | LeaseRequest) -> Timing:
        if lease.arp_probe_wait is None:
            return self.timing
        return replace(self.timing, arp_probe_wait=lease.arp_probe_wait)

    async def _drop(self, key: str) -> None:
        await super()._drop(key)
        podif.forget(key)

    def _log_state(self, lease: Lease, detail: str = "", *, level: int = logging.INFO) -> None:
        now = self.clock.time()
        log.log(
            level,
            "%s: state=%s address=%s server=%s renew_in=%.0fs rebind_in=%.0fs expires_in=%.0fs%s",
            lease.key,
            lease.state,
            lease.address,
            lease.server_id,
            lease.renew_at - now,
            lease.rebind_at - now,
            lease.expires_at - now,
            f" ({detail})" if detail else "",
        )

    def _set_state(self, entry: Entry, state: LeaseState, detail: str = "") -> None:
        if entry.lease.state != state:
            entry.lease = entry.lease.with_state(state)
            # RENEWING is routine (every lease, every T1) and the BOUND line that follows a
            # renewal says it at info; REBINDING and the rest are news.
            level = logging.DEBUG if state == LeaseState.RENEWING else logging.INFO
            self._log_state(entry.lease, detail, level=level)

    # -- server MACs (ipam.serverAllowList) ----------------------------------------------

    def _pin(self, client: DhcpClient, where: Callable[[], Lease | LeaseRequest]) -> None:
        client.server_mac_for = lambda server: self._expected_server_mac(where(), server)

    def _expected_server_mac(self, where: Lease | LeaseRequest, server: IPv4Address) -> str | None:
        """The MAC replies claiming ``server`` must come from: the "ip@mac" pin, else the
        node's learned entry. Not the lease's own server_mac: an admin who removes a stale
        entry (the server's NIC changed) must free every pod, and the next lease re-learns."""
        for ip, mac in where.server_macs:
            if ip == server:
                return mac
        return self.server_macs.get(network_of(where), server)

    async def _learn_server_mac(self, lease: Lease) -> None:
        server = lease.server_id
        if (
            server not in lease.server_allow_list
            or lease.server_mac is None
            or any(ip == server for ip, _mac in lease.server_macs)
        ):
            return
        network = network_of(lease)
        try:
            learned = await asyncio.to_thread(
                self.server_macs.learn, network, server, lease.server_mac
            )
        except CNIError as exc:
            log.error("%s: cannot record the DHCP server's MAC: %s", lease.key, exc.msg)
            return
        if learned:
            log.info(
                "%s: DHCP server %s of network %s answers from MAC %s: replies claiming its "
                "id from any other MAC are ignored from now on",
                lease.key,
                server,
                network,
                lease.server_mac,
            )


def identity_of(lease: Lease | LeaseRequest) -> Identity:
    return Identity(
        mac=lease.mac.lower(),
        # lease.client_id stays the pod identity (address book, doctor); this is the wire form
        client_id=wire_client_id(lease.client_id_mode, lease.client_id, lease.mac),
        hostname=lease.hostname,
        extra_request=tuple(lease.extra_request),
        provide=tuple(lease.provide),
        broadcast_flag=lease.broadcast_flag,
        server_allow_list=tuple(lease.server_allow_list),
    )


def target_of(lease: Lease) -> Target:
    return Target(
        netns_path=lease.netns_path,
        ifname=lease.ifname,
        mac=lease.mac,
        netns_inode=lease.netns_inode,
    )


def current(entry: Entry) -> Callable[[], Lease]:
    # the entry's lease as it is when asked (it changes at every renewal)
    return lambda: entry.lease


def network_of(where: Lease | LeaseRequest) -> str:
    # keys are "<network>/<container id>/<ifname>"
    return where.meta.get("network") or where.key.split("/", 1)[0]
