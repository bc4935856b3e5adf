"""LeaseManager: every pod lease the agent holds, its timers, and its journal.

The public API is here: ``acquire`` / ``release`` for ADD and DEL, the client id claims,
lookups, and ``start``, which re-adopts the journaled leases of a previous agent (and gives
back those whose pod vanished meanwhile). The per-lease tasks are in ``upkeep``, the
releases in ``releases`` and the shared table in ``lease_table``. ``close()`` stops the tasks
and leaves the journal as it is: the next agent re-adopts.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import replace
from pathlib import Path

from ...cni.errors import CNIError, ErrorCode
from ..datapath.netns import netns_inode
from . import podif
from .client import DhcpClient
from .clock import Clock, SystemClock
from .lease import Lease, LeaseRequest, LeaseState, bind
from .lease_book import cancel_task, durably
from .lease_table import ChangeHook, Entry, NodeTransports, current, target_of
from .node_release import BridgeSender, NodeReleaseError, open_node_transport
from .releases import send_release
from .session import Bound, DhcpNaked, DhcpTimeout, Timing
from .transport import (
    Gone,
    PodTransportFactory,
    Target,
    Transport,
    TransportFactory,
    pod_still_there,
)
from .upkeep import LeaseUpkeep

log = logging.getLogger(__name__)


async def default_node_transports(lease: Lease) -> Transport:
    """The agent's: a raw frame on the node's interface towards the lease's server. Not the
    manager's default, so that a manager built elsewhere (tests) never sends from its
    own namespace."""
    return await open_node_transport(lease.server_id, lease.mac, lease.meta.get("bridge"))


async def default_on_change(key: str, old: Lease | None, new: Lease | None) -> None:
    if new is None and old is not None:
        await podif.remove_address(old)
    elif new is not None and old is None:
        await podif.add_address(new)
    elif new is not None and old is not None and old.address != new.address:
        await podif.change_address(old, new)


class LeaseManager(LeaseUpkeep):
    def __init__(
        self,
        state_dir: Path,
        *,
        clock: Clock | None = None,
        timing: Timing | None = None,
        arp_probe_wait: float | None = None,
        transports: TransportFactory | None = None,
        node_transports: NodeTransports | None = None,
        bridge_sender: BridgeSender | None = None,
        on_change: ChangeHook | None = default_on_change,
        reacquire_timeout: float = 30.0,
        reacquire_max_backoff: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        timing = timing or Timing()
        if arp_probe_wait is not None:
            timing = replace(timing, arp_probe_wait=arp_probe_wait)
        super().__init__(
            state_dir,
            clock=clock or SystemClock(),
            timing=timing,
            transports=transports or PodTransportFactory(),
            node_transports=node_transports,
            on_change=on_change,
            reacquire_timeout=reacquire_timeout,
            reacquire_max_backoff=reacquire_max_backoff,
            rng=rng or random.SystemRandom(),
        )
        # Client ids chosen by ADDs still obtaining their lease (key -> client id).
        self._claims: dict[str, bytes] = {}
        # A DEL's RELEASE written on the pod's bridge (None: always from inside the pod). Not
        # the default, so that a manager built elsewhere (tests) never sends from its own
        # namespace.
        self.bridge_sender = bridge_sender

    async def start(self) -> None:
        """Re-adopt journaled leases whose pod interface still exists; drop the others."""
        records = await asyncio.to_thread(self.journal.load)
        for lease in records:
            if lease.key in self._entries:
                continue
            present = await pod_still_there(self.transports.exists(target_of(lease)), lease.key)
            if not present:
                # Its DEL was missed (the agent was down): give the lease back from the node.
                await self._release_vanished(
                    lease, f"pod vanished: netns {lease.netns_path} or its {lease.ifname} is gone"
                )
                await self._forget_record(lease.key)
                continue
            reboot = self.clock.time() >= lease.rebind_at or lease.state == LeaseState.EXPIRED
            if reboot:
                lease = lease.with_state(LeaseState.REBOOTING)
            entry = Entry(lease, self._client(lease))
            self._pin(entry.client, current(entry))
            self._entries[lease.key] = entry
            log.info(
                "%s: state=ADOPTED address=%s server=%s renew_in=%.0fs expires_in=%.0fs",
                lease.key,
                lease.address.ip,
                lease.server_id,
                lease.renew_at - self.clock.time(),
                lease.expires_at - self.clock.time(),
            )
            entry.task = asyncio.create_task(self._maintain(entry, reboot=reboot))

    def claim_client_id(self, key: str, usual: bytes, per_sandbox: bytes) -> bytes:
        """The client id attachment ``key`` uses: ``usual`` (the pod's identity) unless
        another live attachment (a lease, or an ADD still obtaining one) holds it, then
        ``per_sandbox``. Synchronous, so check and claim are atomic on the event loop; the
        claim lasts until ``unclaim`` (the lease then holds the id)."""
        claimed = self._claims.get(key)
        if claimed in (usual, per_sandbox):
            assert claimed is not None
            return claimed  # the same ADD asking again: the same answer
        held = {cid for k, cid in self._claims.items() if k != key}
        held.update(e.lease.client_id for k, e in self._entries.items() if k != key)
        chosen = per_sandbox if usual in held else usual
        if chosen is per_sandbox:
            log.info(
                "%s: the pod's DHCP identity %r is held by another live attachment; this "
                "sandbox uses %r",
                key,
                usual[1:].decode(errors="replace"),
                per_sandbox[1:].decode(errors="replace"),
            )
        self._claims[key] = chosen
        return chosen

    def unclaim(self, key: str) -> None:
        self._claims.pop(key, None)

    async def acquire(self, req: LeaseRequest) -> Lease:
        if req.prefer_address is not None:
            holder = self.held_by_other(req.prefer_address, req.key)
            if holder is not None:
                # Option 50 for a live pod's address would make the server move its lease.
                log.info("%s: not asking for %s: %s holds it", req.key, req.prefer_address, holder)
                req = replace(req, prefer_address=None)
        async with self._lock(req.key):
            inode = netns_inode(req.netns_fd)
            existing = self._entries.get(req.key)
            if existing is not None:
                old = existing.lease
                if (
                    old.netns_inode == inode
                    and old.ifname == req.ifname
                    and old.mac.lower() == req.mac.lower()
                    and old.state != LeaseState.EXPIRED
                ):
                    return old
                await self._drop(req.key)
            client = self._client(req)
            self._pin(client, lambda: req)
            bound = await self._obtain(client, req)
            lease = bind(
                bound.info,
                where=req,
                inode=inode,
                server_mac=bound.server_mac,
                sent_at=bound.sent_at,
            )
            try:
                await durably(self.journal.write, lease)
            except CNIError as exc:
                # Unjournaled, a restart could not find it: give it back rather than hold it.
                await self._release_unjournaled(client, lease)
                raise CNIError(
                    exc.code, f"cannot journal the lease for {req.key}: {exc.msg}", exc.details
                ) from exc
            entry = Entry(lease, client)
            self._pin(client, current(entry))
            self._entries[req.key] = entry
            self._log_state(lease)
            await self._learn_server_mac(lease)
            entry.task = asyncio.create_task(self._maintain(entry))
            return lease

    async def _obtain(self, client: DhcpClient, req: LeaseRequest) -> Bound:
        """A new lease on the pod's interface, its failures as the CNI errors of ADD."""
        target = Target(req.netns_path, req.ifname, req.mac, netns_fd=req.netns_fd)
        where = f"{req.ifname} in netns {req.netns_path}"
        try:
            tr = await self.transports.open(target, bring_up=True)
        except Gone as exc:
            raise CNIError(ErrorCode.IO_FAILURE, f"cannot use {where} for DHCP: {exc}") from exc
        try:
            return await client.obtain(tr, req.timeout, prefer=req.prefer_address)
        except DhcpTimeout as exc:
            raise CNIError(
                ErrorCode.DHCP_TIMEOUT,
                f"no DHCP lease for {where} within {req.timeout:g}s",
                str(exc),
            ) from exc
        except DhcpNaked as exc:
            raise CNIError(
                ErrorCode.DHCP_NAK, f"DHCP server refused a lease for {where}", str(exc)
            ) from exc
        finally:
            tr.close()

    async def release(self, key: str, *, from_bridge: str | None = None) -> bool:
        """Give ``key``'s lease back. ``from_bridge``: the pod's port is on that bridge, so
        its RELEASE may be written there (BridgeSender) rather than from inside the pod."""
        async with self._lock(key):
            entry = self._entries.pop(key, None)
            if entry is None:
                # A record can exist without an entry only if an acquire() was cancelled
                # between journaling and returning: never let it be re-adopted later.
                await durably(self.journal.remove, key)
                return False
            await cancel_task(entry.task)
            lease = entry.lease
            if lease.state == LeaseState.EXPIRED:
                log.info(
                    "%s: state=RELEASED address=%s (already lost, nothing to send)",
                    key,
                    lease.address.ip,
                )
            elif not (from_bridge and await self._release_on_bridge(entry, from_bridge)):
                await self._release_from_pod(entry)
            await durably(self.journal.remove, key)
            podif.forget(key)
            return True

    async def _release_on_bridge(self, entry: Entry, bridge: str) -> bool:
        """RELEASE written on ``bridge``; False when it cannot be (the pod's own path then)."""
        lease = entry.lease
        sender = self.bridge_sender
        tr = sender.transport(bridge, lease.mac, lease.server_mac) if sender else None
        if tr is None:
            return False
        try:
            await send_release(entry.client, tr, lease)
        except NodeReleaseError as exc:
            log.debug("%s: RELEASE from the pod instead: %s", lease.key, exc)
            return False
        self._log_released(lease)
        return True

    async def _release_from_pod(self, entry: Entry) -> None:
        lease = entry.lease
        try:
            tr = await self.transports.open(target_of(lease), unicast_from=lease.address.ip)
        except (Gone, OSError) as exc:
            # The pod's namespace or interface is gone before its DEL: release from the
            # node instead.
            await self._release_vanished(lease, f"pod gone: {exc}", entry.client)
        else:
            await send_release(entry.client, tr, lease)
            self._log_released(lease)

    @staticmethod
    def _log_released(lease: Lease) -> None:
        log.info(
            "%s: state=RELEASED address=%s server=%s", lease.key, lease.address.ip, lease.server_id
        )

    async def forget(self, key: str) -> None:
        async with self._lock(key):
            await self._drop(key)


__all__ = [
    "ChangeHook",
    "LeaseManager",
    "default_node_transports",
    "default_on_change",
]
