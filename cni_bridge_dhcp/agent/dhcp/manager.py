"""LeaseManager: every pod lease the agent holds, its timers, and its journal.

One asyncio task per lease sleeps until the lease's next deadline (wall clock, from the
journal) and runs RENEWING, REBINDING, loss and re-acquisition. Packet transports are
opened per transaction, so an idle lease holds no socket and no namespace reference.
``close()`` stops the tasks and leaves the journal as it is: the next agent re-adopts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from pathlib import Path

from ...cni.errors import CNIError, ErrorCode
from ..datapath.netns import netns_inode
from ..runtime.shielded import to_completion
from . import podif
from .client import Bound, DhcpClient, DhcpNaked, DhcpTimeout, Identity, Nak, Timing
from .clock import Clock, SystemClock
from .identity import wire_client_id
from .journal import Journal
from .lease import Lease, LeaseRequest
from .node_release import NodeReleaseError, open_node_transport
from .servermacs import ServerMacs
from .transport import Gone, PodTransportFactory, Target, Transport, TransportFactory

log = logging.getLogger(__name__)

BOUND = "BOUND"
RENEWING = "RENEWING"
REBINDING = "REBINDING"
REBOOTING = "REBOOTING"
EXPIRED = "EXPIRED"  # lost (expiry or NAK); the address is off the pod; re-acquiring

# (key, old, new): new is None when the lease is lost, old is None when it is regained.
ChangeHook = Callable[[str, Lease | None, Lease | None], Awaitable[None]]
# Opens a send-only transport on the node that speaks as a departed pod (node_release).
NodeTransports = Callable[[Lease], Awaitable[Transport]]


async def default_node_transports(lease: Lease) -> Transport:
    """The agent's: a raw frame on the node's interface towards the lease's server. Not the
    manager's default, so that a manager built elsewhere (tests) never sends from its
    own namespace."""
    return await open_node_transport(lease.server_id, lease.mac, lease.meta.get("bridge"))


_MAX_SLEEP = 60.0  # re-read the wall clock at least this often (suspend, clock steps)


async def default_on_change(key: str, old: Lease | None, new: Lease | None) -> None:
    if new is None and old is not None:
        await podif.remove_address(old)
    elif new is not None and old is None:
        await podif.add_address(new)
    elif new is not None and old is not None and old.address != new.address:
        await podif.change_address(old, new)


@dataclass
class _Entry:
    lease: Lease
    client: DhcpClient
    task: asyncio.Task[None] | None = None


def _identity(lease: Lease | LeaseRequest) -> Identity:
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


def _target(lease: Lease) -> Target:
    return Target(
        netns_path=lease.netns_path,
        ifname=lease.ifname,
        mac=lease.mac,
        netns_inode=lease.netns_inode,
    )


class LeaseManager:
    def __init__(
        self,
        state_dir: Path,
        *,
        clock: Clock | None = None,
        timing: Timing | None = None,
        arp_probe_wait: float | None = None,
        transports: TransportFactory | None = None,
        node_transports: NodeTransports | None = None,
        on_change: ChangeHook | None = default_on_change,
        reacquire_timeout: float = 30.0,
        reacquire_max_backoff: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.journal = Journal(state_dir)
        self.server_macs = ServerMacs(state_dir)
        self.clock: Clock = clock or SystemClock()
        timing = timing or Timing()
        if arp_probe_wait is not None:
            timing = replace(timing, arp_probe_wait=arp_probe_wait)
        self.timing = timing
        self.transports: TransportFactory = transports or PodTransportFactory()
        self.node_transports = node_transports
        self.on_change = on_change
        self.reacquire_timeout = reacquire_timeout
        self.reacquire_max_backoff = reacquire_max_backoff
        self.rng = rng or random.SystemRandom()
        self._entries: dict[str, _Entry] = {}
        # Client ids chosen by ADDs still obtaining their lease (key -> client id).
        self._claims: dict[str, bytes] = {}
        # Weak: a key's lock lives while someone holds or awaits it, so keys of long-gone
        # pods do not accumulate.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # -- public API ----------------------------------------------------------------------

    async def start(self) -> None:
        """Re-adopt journaled leases whose pod interface still exists; drop the others."""
        records = await asyncio.to_thread(self.journal.load)
        for lease in records:
            if lease.key in self._entries:
                continue
            present = await self.transports.exists(_target(lease))
            if not present:
                # Its DEL was missed (the agent was down): give the lease back from the node.
                await self._release_vanished(
                    lease, f"pod vanished: netns {lease.netns_path} or its {lease.ifname} is gone"
                )
                await self._forget_record(lease.key)
                continue
            reboot = self.clock.time() >= lease.rebind_at or lease.state == EXPIRED
            if reboot:
                lease = lease.with_state(REBOOTING)
            entry = _Entry(lease, self._client(lease))
            self._pin(entry.client, _current(entry))
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

    def held_by_other(self, address: IPv4Address, key: str) -> str | None:
        """The key of another live attachment whose lease holds ``address``, if any."""
        for other, entry in self._entries.items():
            if other != key and entry.lease.address.ip == address:
                return other
        return None

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
                    and old.state != EXPIRED
                ):
                    return old
                await self._drop(req.key)
            client = DhcpClient(
                _identity(req),
                label=req.key,
                clock=self.clock,
                timing=self._timing_for(req),
                rng=self.rng,
            )
            self._pin(client, lambda: req)
            target = Target(req.netns_path, req.ifname, req.mac, netns_fd=req.netns_fd)
            where = f"{req.ifname} in netns {req.netns_path}"
            try:
                tr = await self.transports.open(target, bring_up=True)
            except Gone as exc:
                raise CNIError(ErrorCode.IO_FAILURE, f"cannot use {where} for DHCP: {exc}") from exc
            try:
                bound = await client.obtain(tr, req.timeout, prefer=req.prefer_address)
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
            lease = self._lease_from(bound, req=req, inode=inode)
            try:
                await _durably(self.journal.write, lease)
            except CNIError as exc:
                # Unjournaled, a restart could not find it: give it back rather than hold it.
                await self._release_unjournaled(client, lease)
                raise CNIError(
                    exc.code, f"cannot journal the lease for {req.key}: {exc.msg}", exc.details
                ) from exc
            entry = _Entry(lease, client)
            self._pin(client, _current(entry))
            self._entries[req.key] = entry
            self._log_state(lease)
            await self._learn_server_mac(lease)
            entry.task = asyncio.create_task(self._maintain(entry))
            return lease

    async def release(self, key: str) -> bool:
        async with self._lock(key):
            entry = self._entries.pop(key, None)
            if entry is None:
                # A record can exist without an entry only if an acquire() was cancelled
                # between journaling and returning: never let it be re-adopted later.
                await _durably(self.journal.remove, key)
                return False
            await _cancel(entry.task)
            lease = entry.lease
            if lease.state == EXPIRED:
                log.info(
                    "%s: state=RELEASED address=%s (already lost, nothing to send)",
                    key,
                    lease.address.ip,
                )
            else:
                try:
                    tr = await self.transports.open(_target(lease), unicast_from=lease.address.ip)
                except (Gone, OSError) as exc:
                    # The pod's namespace or interface is gone before its DEL: release from
                    # the node instead.
                    await self._release_vanished(lease, f"pod gone: {exc}", entry.client)
                else:
                    try:
                        await entry.client.release(
                            tr,
                            address=lease.address.ip,
                            server_id=lease.server_id,
                            server_mac=lease.server_mac,
                        )
                    finally:
                        tr.close()
                    log.info(
                        "%s: state=RELEASED address=%s server=%s",
                        key,
                        lease.address.ip,
                        lease.server_id,
                    )
            await _durably(self.journal.remove, key)
            podif.forget(key)
            return True

    def get(self, key: str) -> Lease | None:
        entry = self._entries.get(key)
        return entry.lease if entry else None

    def leases(self) -> list[Lease]:
        return [entry.lease for entry in self._entries.values()]

    async def forget(self, key: str) -> None:
        async with self._lock(key):
            await self._drop(key)

    async def close(self) -> None:
        """Stop every timer and task; release nothing, keep the journal."""
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._entries.clear()

    # -- internals -----------------------------------------------------------------------

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    async def _forget_record(self, key: str) -> None:
        """Remove a dropped lease's record; one that cannot be removed is dropped again by the
        next start (its pod is gone), so the agent goes on."""
        try:
            await _durably(self.journal.remove, key)
        except CNIError as exc:
            log.error("%s: %s", key, exc.msg)

    def _client(self, lease: Lease) -> DhcpClient:
        return DhcpClient(
            _identity(lease),
            label=lease.key,
            clock=self.clock,
            timing=self._timing_for(lease),
            rng=self.rng,
        )

    def _timing_for(self, lease: Lease | LeaseRequest) -> Timing:
        if lease.arp_probe_wait is None:
            return self.timing
        return replace(self.timing, arp_probe_wait=lease.arp_probe_wait)

    async def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            await _cancel(entry.task)
        await _durably(self.journal.remove, key)
        podif.forget(key)

    def _lease_from(
        self,
        bound: Bound,
        *,
        req: LeaseRequest | None = None,
        inode: int = 0,
        prev: Lease | None = None,
    ) -> Lease:
        info = bound.info
        base = bound.sent_at
        if prev is not None:
            where: LeaseRequest | Lease = prev
            inode = prev.netns_inode
        else:
            assert req is not None
            where = req
        return Lease(
            key=where.key,
            netns_path=where.netns_path,
            netns_inode=inode,
            ifname=where.ifname,
            mac=where.mac.lower(),
            client_id=where.client_id,
            hostname=where.hostname,
            meta=dict(where.meta),
            extra_request=tuple(where.extra_request),
            provide=tuple(where.provide),
            broadcast_flag=where.broadcast_flag,
            server_allow_list=tuple(where.server_allow_list),
            server_macs=tuple(where.server_macs),
            arp_probe_wait=where.arp_probe_wait,
            client_id_mode=where.client_id_mode,
            address=info.address,
            server_id=info.server_id,
            server_mac=bound.server_mac,
            router=info.router,
            dns_servers=info.dns_servers,
            domain=info.domain,
            search=info.search,
            mtu=info.mtu,
            routes=info.routes,
            options=info.options,
            lease_time=info.lease_time,
            t1=info.t1,
            t2=info.t2,
            bound_at=base,
            renew_at=base + info.t1,
            rebind_at=base + info.t2,
            expires_at=base + info.lease_time,
            state=BOUND,
        )

    def _log_state(self, lease: Lease, detail: str = "") -> None:
        now = self.clock.time()
        log.info(
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

    def _set_state(self, entry: _Entry, state: str, detail: str = "") -> None:
        if entry.lease.state != state:
            entry.lease = entry.lease.with_state(state)
            self._log_state(entry.lease, detail)

    async def _sleep_until(self, deadline: float) -> None:
        while True:
            remaining = deadline - self.clock.time()
            if remaining <= 0:
                return
            await self.clock.sleep(min(remaining, _MAX_SLEEP))

    async def _hook(self, key: str, old: Lease | None, new: Lease | None) -> None:
        if self.on_change is None:
            return
        try:
            await self.on_change(key, old, new)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: lease change hook failed", key)

    async def _commit(self, entry: _Entry, lease: Lease) -> None:
        """Journal first, then publish: whatever get() shows is on disk."""
        try:
            await _durably(self.journal.write, lease)
        except CNIError as exc:
            # The lease itself is fine; a restart would re-adopt from the older record.
            log.error("%s: cannot journal lease: %s", lease.key, exc.msg)
        entry.lease = lease

    async def _maintain(self, entry: _Entry, *, reboot: bool = False) -> None:
        key = entry.lease.key
        try:
            if reboot:
                await self._reboot(entry)
            while True:
                try:
                    if entry.lease.state == EXPIRED:
                        await self._reacquire(entry)
                        continue
                    await self._sleep_until(entry.lease.renew_at)
                    await self._extend(entry)
                except (Gone, asyncio.CancelledError):
                    raise
                except Exception:
                    # A bug must not end the lease's upkeep silently; try again shortly.
                    log.exception("%s: lease upkeep failed; retrying", key)
                    await self.clock.sleep(5.0)
        except Gone as exc:
            if self._entries.get(key) is entry:
                # Nobody can use the address any more: give it back now, not at expiry.
                del self._entries[key]
                await self._release_vanished(entry.lease, f"pod gone: {exc}", entry.client)
                await self._forget_record(key)

    async def _extend(self, entry: _Entry) -> None:
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
            state = REBINDING if rebinding else RENEWING
            if lease.state != state:
                xid = client.new_xid()
                self._set_state(entry, state)
            phase_end = lease.expires_at if rebinding else lease.rebind_at
            wait = min(client.renew_retransmit(phase_end - now), phase_end - now)
            tr = await self.transports.open(_target(lease), unicast_from=lease.address.ip)
            try:
                result = await client.renew(
                    tr,
                    xid,
                    address=lease.address.ip,
                    server_id=lease.server_id,
                    server_mac=lease.server_mac,
                    rebinding=rebinding,
                    until=self.clock.monotonic() + wait,
                )
            finally:
                tr.close()
            if isinstance(result, Bound):
                await self._rebound(entry, result)
                return
            if isinstance(result, Nak):
                await self._lose(entry, f"NAK from {result.server}: {result.message}")
                return

    async def _rebound(self, entry: _Entry, bound: Bound) -> None:
        old = entry.lease
        if (
            old.state != EXPIRED
            and bound.info.address.ip != old.address.ip
            and await self._moved_address_in_use(entry, bound)
        ):
            return
        lease = self._lease_from(bound, prev=old)
        await self._commit(entry, lease)
        self._log_state(lease)
        await self._learn_server_mac(lease)
        if old.state == EXPIRED:
            await self._hook(lease.key, None, lease)
        elif old.address != lease.address:
            await self._hook(lease.key, old, lease)

    async def _moved_address_in_use(self, entry: _Entry, bound: Bound) -> bool:
        """RFC 5227 probe of the address the server moved the lease to, as for a new lease
        (honouring ipam.arpProbeWait; 0 skips it). On a conflict: DECLINE, the lease is lost
        (the old address comes off: the server moved it away) and upkeep re-runs INIT."""
        client = entry.client
        moved = bound.info.address.ip
        wait = client.timing.arp_probe_wait
        if wait <= 0:
            return False
        tr = await self.transports.open(_target(entry.lease))
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
        return self.server_macs.get(_network(where), server)

    async def _learn_server_mac(self, lease: Lease) -> None:
        server = lease.server_id
        if (
            server not in lease.server_allow_list
            or lease.server_mac is None
            or any(ip == server for ip, _mac in lease.server_macs)
        ):
            return
        network = _network(lease)
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

    async def _lose(self, entry: _Entry, why: str) -> None:
        old = entry.lease
        lost = old.with_state(EXPIRED)
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

    async def _reboot(self, entry: _Entry) -> None:
        lease = entry.lease
        self._set_state(entry, REBOOTING, "INIT-REBOOT after agent restart")
        lease = entry.lease
        tr = await self.transports.open(_target(lease), bring_up=True)
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
            entry.lease = lease.with_state(REBINDING)

    async def _reacquire(self, entry: _Entry) -> None:
        attempt = 0
        while True:
            lease = entry.lease
            # Its old address, unless another of our pods has been given it meanwhile.
            prefer = None if self.held_by_other(lease.address.ip, lease.key) else lease.address.ip
            tr = await self.transports.open(_target(lease), bring_up=True)
            try:
                bound = await entry.client.obtain(tr, self.reacquire_timeout, prefer=prefer)
            except (DhcpTimeout, DhcpNaked) as exc:
                log.warning("%s: re-acquiring failed: %s", lease.key, exc)
            else:
                await self._rebound(entry, bound)
                return
            finally:
                tr.close()
            delay = min(self.reacquire_max_backoff, 2.0**attempt) * self.rng.uniform(0.75, 1.25)
            attempt += 1
            await self.clock.sleep(delay)

    async def _release_vanished(
        self, lease: Lease, why: str, client: DhcpClient | None = None
    ) -> None:
        """DHCPRELEASE for a pod that no longer exists, sent from the node (node_release)."""
        if lease.state == EXPIRED or self.clock.time() >= lease.expires_at:
            log.info(
                "%s: state=RELEASED address=%s (%s; lease already lost, nothing to send)",
                lease.key,
                lease.address.ip,
                why,
            )
            return
        client = client or self._client(lease)
        try:
            if self.node_transports is None:
                raise NodeReleaseError("no node transport configured")
            tr = await self.node_transports(lease)
        except (NodeReleaseError, OSError) as exc:
            log.warning(
                "%s: state=DROPPED address=%s server=%s (%s; no RELEASE possible: %s)",
                lease.key,
                lease.address.ip,
                lease.server_id,
                why,
                exc,
            )
            return
        try:
            await client.release(
                tr,
                address=lease.address.ip,
                server_id=lease.server_id,
                server_mac=lease.server_mac,
            )
        except NodeReleaseError as exc:
            log.warning(
                "%s: state=DROPPED address=%s server=%s (%s; RELEASE not sent: %s)",
                lease.key,
                lease.address.ip,
                lease.server_id,
                why,
                exc,
            )
            return
        finally:
            tr.close()
        log.info(
            "%s: state=RELEASED address=%s server=%s (%s; DHCPRELEASE sent from the node)",
            lease.key,
            lease.address.ip,
            lease.server_id,
            why,
        )

    async def _release_unjournaled(self, client: DhcpClient, lease: Lease) -> None:
        with contextlib.suppress(Gone, OSError):
            tr = await self.transports.open(_target(lease), unicast_from=lease.address.ip)
            try:
                await client.release(
                    tr,
                    address=lease.address.ip,
                    server_id=lease.server_id,
                    server_mac=lease.server_mac,
                )
            finally:
                tr.close()


def _current(entry: _Entry) -> Callable[[], Lease]:
    # the entry's lease as it is when asked (it changes at every renewal)
    return lambda: entry.lease


def _network(where: Lease | LeaseRequest) -> str:
    # keys are "<network>/<container id>/<ifname>"
    return where.meta.get("network") or where.key.split("/", 1)[0]


async def _durably(fn: Callable[..., object], *args: object) -> None:
    """A blocking journal operation in a thread, finished even if our task is cancelled."""
    await to_completion(asyncio.to_thread(fn, *args))


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


__all__ = [
    "BOUND",
    "EXPIRED",
    "REBINDING",
    "REBOOTING",
    "RENEWING",
    "ChangeHook",
    "LeaseManager",
    "default_node_transports",
    "default_on_change",
]
