"""Per-lease upkeep, RFC 2131's part: RENEWING, REBINDING, INIT-REBOOT, loss and
re-acquisition, run by the task ``lease_book`` keeps per lease, which sleeps until the
lease's next deadline (wall clock, from the journal).
Packet transports are opened per transaction, so an idle lease holds no socket and no
namespace reference."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from .client import DhcpClient
from .lease import Lease, LeaseState, bind
from .lease_table import Entry, target_of
from .releases import LeaseReleases
from .session import Bound, DhcpNaked, DhcpTimeout, Nak
from .transport import Gone, Transport

log = logging.getLogger(__name__)


async def renew_once(
    client: DhcpClient,
    open_transport: Callable[[], Awaitable[Transport]],
    lease: Lease,
    xid: int,
    rebinding: bool,
    wait: float,
) -> Bound | Nak | None:
    """One RENEWING or REBINDING attempt of ``lease`` for ``wait`` seconds, on a transport
    opened for it and closed after (pod leases and the node's own lease alike)."""
    tr = await open_transport()
    try:
        return await client.renew(
            tr,
            xid,
            address=lease.address.ip,
            server_id=lease.server_id,
            server_mac=lease.server_mac,
            rebinding=rebinding,
            until=client.clock.monotonic() + wait,
        )
    finally:
        tr.close()


class LeaseUpkeep(LeaseReleases):
    async def _pod_gone(self, entry: Entry, why: Gone) -> None:
        # Nobody can use the address any more: give it back now, not at expiry.
        await self._release_vanished(entry.lease, f"pod gone: {why}", entry.client)
        await self._forget_record(entry.lease.key)

    async def _extend(self, entry: Entry) -> None:
        """RENEWING until T2, REBINDING until expiry; returns bound again or lost."""
        client = entry.client
        xid = client.new_xid()
        while True:
            lease = entry.lease
            now = self.clock.time()
            if now >= lease.expires_at:
                await self._lose(entry, "lease expired without renewal")
                return
            rebinding = now >= lease.rebind_at
            state = LeaseState.REBINDING if rebinding else LeaseState.RENEWING
            if lease.state != state:
                xid = client.new_xid()
                self._set_state(entry, state)
            phase_end = lease.expires_at if rebinding else lease.rebind_at
            wait = min(client.renew_retransmit(phase_end - now), phase_end - now)
            opener = functools.partial(
                self.transports.open, target_of(lease), unicast_from=lease.address.ip
            )
            result = await renew_once(client, opener, lease, xid, rebinding, wait)
            if isinstance(result, Bound):
                await self._rebound(entry, result)
                return
            if isinstance(result, Nak):
                await self._lose(entry, f"NAK from {result.server}: {result.message}")
                return

    async def _rebound(self, entry: Entry, bound: Bound) -> None:
        old = entry.lease
        if (
            old.state != LeaseState.EXPIRED
            and bound.info.address.ip != old.address.ip
            and await self._moved_address_in_use(entry, bound)
        ):
            return
        lease = bind(
            bound.info,
            where=old,
            inode=old.netns_inode,
            server_mac=bound.server_mac,
            sent_at=bound.sent_at,
        )
        await self._commit(entry, lease)
        self._log_state(lease)
        await self._learn_server_mac(lease)
        if old.state == LeaseState.EXPIRED:
            await self._hook(lease.key, None, lease)
        elif old.address != lease.address:
            await self._hook(lease.key, old, lease)

    async def _moved_address_in_use(self, entry: Entry, bound: Bound) -> bool:
        """RFC 5227 probe of the address the server moved the lease to, as for a new lease
        (honouring ipam.arpProbeWait; 0 skips it). On a conflict: DECLINE, the lease is lost
        (the old address comes off: the server moved it away) and upkeep re-runs INIT."""
        client = entry.client
        moved = bound.info.address.ip
        wait = client.timing.arp_probe_wait
        if wait <= 0:
            return False
        tr = await self.transports.open(target_of(entry.lease))
        try:
            in_use = await tr.arp_probe(moved, wait, client.timing.arp_probes)
            if in_use:
                await client.decline(tr, address=moved, server_id=bound.info.server_id)
        finally:
            tr.close()
        log.debug("%s: ARP probe of %s (moved at renewal): %s", entry.lease.key, moved, in_use)
        if not in_use:
            return False
        log.warning(
            "%s: the DHCP server %s moved the lease from %s to %s, which is in use on the "
            "link (ARP); sent DECLINE, re-acquiring",
            entry.lease.key,
            bound.info.server_id,
            entry.lease.address.ip,
            moved,
        )
        await self._lose(entry, f"moved to {moved}, which is in use on the link")
        return True

    async def _lose(self, entry: Entry, why: str) -> None:
        old = entry.lease
        lost = old.with_state(LeaseState.EXPIRED)
        await self._commit(entry, lost)
        log.warning(
            "%s: state=EXPIRED address=%s server=%s: lease lost (%s); removing the address "
            "and re-acquiring",
            old.key,
            old.address,
            old.server_id,
            why,
        )
        await self._hook(old.key, old, None)

    async def _reboot(self, entry: Entry) -> None:
        lease = entry.lease
        self._set_state(entry, LeaseState.REBOOTING, "INIT-REBOOT after agent restart")
        lease = entry.lease
        tr = await self.transports.open(target_of(lease), bring_up=True)
        try:
            result = await entry.client.reboot(
                tr, lease.address.ip, min(self.reacquire_timeout, 10.0)
            )
        finally:
            tr.close()
        if isinstance(result, Bound):
            await self._rebound(entry, result)
        elif isinstance(result, Nak) or self.clock.time() >= lease.expires_at:
            why = f"NAK from {result.server}" if isinstance(result, Nak) else "expired"
            await self._lose(entry, why)
        else:
            entry.lease = lease.with_state(LeaseState.REBINDING)

    async def _try_reacquire(self, entry: Entry) -> bool:
        lease = entry.lease
        # Its old address, unless another of our pods has been given it meanwhile.
        prefer = None if self.held_by_other(lease.address.ip, lease.key) else lease.address.ip
        tr = await self.transports.open(target_of(lease), bring_up=True)
        try:
            bound = await entry.client.obtain(tr, self.reacquire_timeout, prefer=prefer)
        except (DhcpTimeout, DhcpNaked) as exc:
            log.warning("%s: re-acquiring failed: %s", lease.key, exc)
            return False
        finally:
            tr.close()
        await self._rebound(entry, bound)
        return True
