"""Lease6Manager: every pod's DHCPv6 lease, its upkeep task and its journal (``leases6/``).

The table, locks, journal commits and upkeep loop are ``lease_book``'s, as for the DHCPv4
LeaseManager: ``acquire`` / ``release`` for ADD and DEL, ``start``
re-adopts the journaled leases of a previous agent (a lease whose pod is gone is dropped:
its address expires at the server), ``close`` stops the tasks and keeps the journal.
Upkeep (RFC 8415 18.2.4-5): RENEW to the lease's server at T1 until T2, REBIND to any
server until the valid lifetime ends; a lease that ends comes off the pod interface
(logged) and the client solicits again with backoff, as the v4 client re-runs INIT.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from ipaddress import IPv6Address
from pathlib import Path

from ....cni.errors import CNIError, ErrorCode
from ...datapath.netns import netns_inode
from ..clock import Clock, SystemClock
from ..lease_book import Entry, LeaseBook, cancel_task, durably
from ..transport import pod_still_there
from . import podaddr
from .client import Bound6, Dhcp6Client, Dhcp6Refused, Dhcp6Timeout, Identity6, Lost6, Timing6
from .hints import AddressHints6
from .lease import Journal6, Lease6, Lease6Request, Lease6State, bind6
from .transport import Gone, PodTransport6Factory, Target6, Transport6Factory

log = logging.getLogger(__name__)

# (key, old, new): new None = lost; otherwise renewed or regained (old then EXPIRED: its
# address is off the pod already), possibly at another address than old's
Change6Hook = Callable[[str, Lease6 | None, Lease6 | None], Awaitable[None]]

Entry6 = Entry[Lease6, Dhcp6Client]


def _target(lease: Lease6) -> Target6:
    return Target6(lease.netns_path, lease.ifname, netns_inode=lease.netns_inode)


async def default_on_change6(key: str, old: Lease6 | None, new: Lease6 | None) -> None:
    lease = new or old
    if lease is None:
        return
    fd = await asyncio.to_thread(podaddr.open_pod, lease.netns_path, lease.netns_inode)
    if fd is None:
        return
    try:
        if new is None and old is not None:
            await asyncio.to_thread(podaddr.remove_address, fd, old.ifname, old.address)
            return
        assert new is not None
        if old is not None and old.state != Lease6State.EXPIRED and old.address != new.address:
            await asyncio.to_thread(podaddr.remove_address, fd, old.ifname, old.address)
        # re-read the prefix: the RA's on-link prefix may have come or gone meanwhile
        plen = await asyncio.to_thread(podaddr.onlink_prefixlen, fd, new.ifname, new.address.ip)
        if old is not None and old.address.ip == new.address.ip:
            plen = old.address.network.prefixlen  # CHECK compares with the ADD result
        preferred, valid = new.lifetimes_at(SystemClock().time())
        address = type(new.address)(f"{new.address.ip}/{plen}")
        await asyncio.to_thread(podaddr.set_address, fd, new.ifname, address, preferred, valid)
    finally:
        os.close(fd)


class Lease6Manager(LeaseBook[Lease6, Dhcp6Client]):
    protocol = "DHCPv6"

    def __init__(
        self,
        state_dir: Path,
        *,
        clock: Clock | None = None,
        timing: Timing6 | None = None,
        transports: Transport6Factory | None = None,
        on_change: Change6Hook | None = default_on_change6,
        reacquire_timeout: float = 30.0,
        reacquire_max_backoff: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            Journal6(state_dir),
            clock=clock or SystemClock(),
            on_change=on_change,
            reacquire_max_backoff=reacquire_max_backoff,
            rng=rng or random.SystemRandom(),
        )
        self.hints = AddressHints6(state_dir)
        self.timing = timing or Timing6()
        self.transports = transports or PodTransport6Factory()
        self.reacquire_timeout = reacquire_timeout

    # -- public API ------------------------------------------------------------------------

    async def start(self) -> None:
        """Re-adopt journaled leases whose pod interface still exists; drop the others."""
        for lease in await asyncio.to_thread(self.journal.load):
            if lease.key in self._entries:
                continue
            if not await pod_still_there(self.transports.exists(_target(lease)), lease.key):
                log.info(
                    "%s: DHCPv6 lease of %s dropped: the pod is gone (it expires at the server)",
                    lease.key,
                    lease.address.ip,
                )
                await self._forget_record(lease.key)
                continue
            entry = Entry(lease, self._client(lease.duid, lease.iaid, lease.key))
            self._entries[lease.key] = entry
            self._log(lease, "ADOPTED")
            entry.task = asyncio.create_task(self._maintain(entry))

    def _hint(self, duid: bytes, key: str) -> IPv6Address | None:
        """The identity's last address, unless another live attachment holds it now."""
        hint = self.hints.get(duid)
        if hint is None or self.held_by_other(hint, key):
            return None
        return hint

    def duid_in_use(self, duid: bytes, key: str) -> bool:
        return any(e.lease.duid == duid for k, e in self._entries.items() if k != key)

    async def acquire(
        self, req: Lease6Request, prefixlen_of: Callable[[Bound6], Awaitable[int]]
    ) -> Lease6:
        """A lease on the pod interface (CNIError 100 when no server answers in time);
        ``prefixlen_of`` gives the prefix length the address goes on the interface with."""
        async with self._lock(req.key):
            existing = self._entries.get(req.key)
            if existing is not None:
                await self._drop(req.key)
            client = self._client(req.duid, req.iaid, req.key)
            where = f"{req.ifname} in netns {req.netns_path}"
            target = Target6(req.netns_path, req.ifname, netns_fd=req.netns_fd)
            try:
                tr = await self.transports.open(target)
            except (Gone, OSError) as exc:
                raise CNIError(
                    ErrorCode.IO_FAILURE, f"cannot use {where} for DHCPv6: {exc}"
                ) from exc
            try:
                bound = await client.obtain(tr, req.timeout, prefer=self._hint(req.duid, req.key))
            except Dhcp6Timeout as exc:
                raise CNIError(
                    ErrorCode.DHCP_TIMEOUT,
                    f"no DHCPv6 lease for {where} within {req.timeout:g}s",
                    str(exc),
                ) from exc
            finally:
                tr.close()
            lease = bind6(
                bound,
                key=req.key,
                netns_path=req.netns_path,
                inode=netns_inode(req.netns_fd),
                ifname=req.ifname,
                duid=req.duid,
                iaid=req.iaid,
                prefixlen=await prefixlen_of(bound),
                meta=req.meta,
            )
            try:
                await durably(self.journal.write, lease)
            except CNIError as exc:
                await self._send_release(client, lease)
                raise CNIError(
                    exc.code, f"cannot journal the DHCPv6 lease for {req.key}: {exc.msg}"
                ) from exc
            entry = Entry(lease, client)
            self._entries[req.key] = entry
            self._log(lease)
            await asyncio.to_thread(self.hints.remember, req.duid, lease.address.ip)
            entry.task = asyncio.create_task(self._maintain(entry))
            return lease

    async def release(self, key: str) -> bool:
        """RELEASE from the pod (DEL, before its link goes); idempotent."""
        async with self._lock(key):
            entry = self._entries.pop(key, None)
            if entry is None:
                # Every DEL of a pod without IPv6 comes here: unlinking an absent record
                # (microseconds) on the loop costs less than a worker-thread trip.
                self.journal.remove(key)
                return False
            await cancel_task(entry.task)
            lease = entry.lease
            if lease.state != Lease6State.EXPIRED:
                await self._send_release(entry.client, lease)
            await durably(self.journal.remove, key)
            return True

    # -- internals -------------------------------------------------------------------------

    def _client(self, duid: bytes, iaid: int, key: str) -> Dhcp6Client:
        return Dhcp6Client(
            Identity6(duid, iaid), clock=self.clock, timing=self.timing, rng=self.rng, label=key
        )

    def _log(self, lease: Lease6, state: str | None = None, detail: str = "") -> None:
        now = self.clock.time()
        log.info(
            "%s: dhcpv6 state=%s address=%s renew_in=%.0fs rebind_in=%.0fs expires_in=%.0fs%s",
            lease.key,
            state or lease.state,
            lease.address,
            lease.renew_at - now,
            lease.rebind_at - now,
            lease.expires_at - now,
            f" ({detail})" if detail else "",
        )

    async def _send_release(self, client: Dhcp6Client, lease: Lease6) -> None:
        try:
            tr = await self.transports.open(_target(lease))
        except (Gone, OSError) as exc:
            log.warning(
                "%s: DHCPv6 RELEASE of %s not sent (%s): it expires at the server",
                lease.key,
                lease.address.ip,
                exc,
            )
            return
        try:
            acked = await client.release(tr, lease.server_id, lease.address.ip)
        finally:
            tr.close()
        log.info(
            "%s: dhcpv6 state=RELEASED address=%s%s",
            lease.key,
            lease.address.ip,
            "" if acked else " (no REPLY from the server)",
        )

    async def _pod_gone(self, entry: Entry6, why: Gone) -> None:
        log.info("%s: DHCPv6 lease dropped: pod gone (%s)", entry.lease.key, why)
        await self._forget_record(entry.lease.key)

    async def _extend(self, entry: Entry6) -> None:
        """RENEWING until T2, REBINDING until the valid lifetime ends."""
        while True:
            lease = entry.lease
            now = self.clock.time()
            if now >= lease.expires_at:
                await self._lose(entry, "valid lifetime ended without renewal")
                return
            rebinding = now >= lease.rebind_at
            state = Lease6State.REBINDING if rebinding else Lease6State.RENEWING
            if lease.state != state:
                entry.lease = lease.with_state(state)
                self._log(entry.lease)
            phase_end = lease.expires_at if rebinding else lease.rebind_at
            tr = await self.transports.open(_target(lease))
            try:
                if rebinding:
                    result = await entry.client.rebind(tr, lease.address.ip, phase_end - now)
                else:
                    result = await entry.client.renew(
                        tr, lease.server_id, lease.address.ip, phase_end - now
                    )
            finally:
                tr.close()
            if isinstance(result, Bound6):
                await self._rebound(entry, result)
                return
            if isinstance(result, Lost6):
                await self._lose(entry, result.why)
                return

    async def _rebound(self, entry: Entry6, bound: Bound6) -> None:
        old = entry.lease
        lease = bind6(
            bound,
            key=old.key,
            netns_path=old.netns_path,
            inode=old.netns_inode,
            ifname=old.ifname,
            duid=old.duid,
            iaid=old.iaid,
            prefixlen=old.address.network.prefixlen,
            meta=old.meta,
        )
        await self._commit(entry, lease)
        self._log(lease)
        await self._hook(lease.key, old, lease)

    async def _lose(self, entry: Entry6, why: str) -> None:
        old = entry.lease
        await self._commit(entry, old.with_state(Lease6State.EXPIRED))
        log.warning(
            "%s: dhcpv6 state=EXPIRED address=%s: lease lost (%s); removing the address and "
            "soliciting again",
            old.key,
            old.address,
            why,
        )
        await self._hook(old.key, old, None)

    async def _try_reacquire(self, entry: Entry6) -> bool:
        lease = entry.lease
        # its old address, unless another of our pods has been given it meanwhile
        prefer = None if self.held_by_other(lease.address.ip, lease.key) else lease.address.ip
        tr = await self.transports.open(_target(lease))
        try:
            bound = await entry.client.obtain(tr, self.reacquire_timeout, prefer=prefer)
        except (Dhcp6Timeout, Dhcp6Refused) as exc:
            log.warning("%s: DHCPv6 re-acquiring failed: %s", lease.key, exc)
            return False
        finally:
            tr.close()
        await self._rebound(entry, bound)
        return True


__all__ = ["Change6Hook", "Lease6Manager", "default_on_change6", "replace"]
