"""The node's own DHCP lease, kept alive on the bridge after the uplink takeover.

The node's address came from DHCP (netplan's default); after the takeover it sits on the
bridge and its client is paused (agent/uplink/dhcpclients.py). This keeper is that client
now, with the identity the server already knows: chaddr = the uplink's MAC (which the
bridge took) and the previous client's option 61. It is the pods' client
(``DhcpClient``: INIT-REBOOT, RENEWING, REBINDING, INIT) on a transport bound to the
bridge in the agent's own namespace, with node-side effects instead of a pod's:

- INIT-REBOOT first (the server confirms or NAKs the address it gave the previous client);
- each ACK sets the bridge address's valid/preferred lifetimes to the lease's remaining time;
- a NAK, an expiry or an ACK for another address: the node's address on the bridge is
  replaced (new address added, old one removed, default route via the lease's router),
  logged as an error: everything that knew the node by its old address must follow;
- the lease is journaled in ``<state_dir>/node-lease.json`` (the pods' record form) and
  re-adopted by the next agent (INIT-REBOOT only when past T2);
- nothing is ever RELEASEd: at ``uplink restore`` the address goes back to the uplink with
  its remaining lifetime and the previous client resumes it. The keeper stops when
  ``still_ours`` says the takeover (or its record) is gone.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from ..datapath.netlink import EEXIST, RT_TABLE_MAIN, Netlink, lookup, node_ipr, tolerate
from ..datapath.netns import own_netns_fd
from ..datapath.sysctl import write_sysctl
from ..state import statefile
from .client import DhcpClient
from .clock import Clock, SystemClock
from .journal import from_record, to_record
from .lease import Lease, LeaseRequest, LeaseState, bind
from .messages import Identity
from .session import Bound, DhcpNaked, DhcpTimeout, Nak, Timing
from .transport import PodTransportFactory, Target, Transport, TransportFactory
from .upkeep import renew_once

log = logging.getLogger(__name__)

JOURNAL_NAME = "node-lease.json"
_CHECK_EVERY = 5.0  # how often a sleeping keeper asks whether the takeover still stands


@dataclass(frozen=True)
class NodeLeaseTarget:
    bridge: str
    mac: str  # the uplink's, now the bridge's: chaddr
    client_id: bytes  # option 61 the previous client sent; b"" none
    address: IPv4Interface  # the node's address on the bridge


StillOurs = Callable[[], Awaitable[bool]]
AddressChanged = Callable[[IPv4Interface, IPv4Interface], Awaitable[None]]


class NodeLeaseKeeper:
    def __init__(
        self,
        state_dir: Path,
        target: NodeLeaseTarget,
        *,
        still_ours: StillOurs,
        on_change: AddressChanged | None = None,
        clock: Clock | None = None,
        timing: Timing | None = None,
        transports: TransportFactory | None = None,
        reacquire_timeout: float = 30.0,
    ) -> None:
        self.path = Path(state_dir) / JOURNAL_NAME
        self.target = target
        self.still_ours = still_ours
        self.on_change = on_change
        self.clock = clock or SystemClock()
        self.transports = transports or PodTransportFactory()
        self.reacquire_timeout = reacquire_timeout
        self.key = f"node:{target.bridge}"
        self.client = DhcpClient(
            Identity(mac=target.mac, client_id=target.client_id, hostname=None),
            label=self.key,
            clock=self.clock,
            timing=timing or Timing(),
        )
        self._netns = f"/proc/{os.getpid()}/ns/net"
        self.lease: Lease | None = None
        self.task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def close(self) -> None:
        """Stop (agent shutdown): the journal stays for the next agent to re-adopt."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self._keep()
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug or a transient failure must not end the node's lease silently.
                log.exception("%s: the node lease keeper failed; retrying", self.key)
                await self.clock.sleep(5.0)
        log.info("%s: the takeover is gone; the node lease is no longer kept here", self.key)
        await asyncio.to_thread(statefile.remove, self.path)

    async def _keep(self) -> None:
        if self.lease is None:
            await self._adopt_or_reboot()
        while await self.still_ours():
            lease = self.lease
            assert lease is not None
            if lease.state == LeaseState.EXPIRED:
                await self._reacquire()
                continue
            if not await self._sleep_until(lease.renew_at):
                return
            await self._extend()

    # -- states --------------------------------------------------------------------------------

    async def _adopt_or_reboot(self) -> None:
        old = await asyncio.to_thread(self._load)
        now = self.clock.time()
        if old is not None and old.address == self.target.address and now < old.rebind_at:
            self.lease = old
            log.info(
                "%s: state=ADOPTED address=%s server=%s renew_in=%.0fs expires_in=%.0fs",
                self.key, old.address, old.server_id, old.renew_at - now, old.expires_at - now,
            )  # fmt: skip
            return
        log.info("%s: INIT-REBOOT for the node's address %s", self.key, self.target.address)
        tr = await self._open()
        try:
            result = await self.client.reboot(tr, self.target.address.ip, 10.0)
        finally:
            tr.close()
        if isinstance(result, Bound):
            await self._bound(result)
        elif isinstance(result, Nak):
            await self._lost(f"INIT-REBOOT NAKed by {result.server}: {result.message}")
        else:
            # No server answered: keep what the kernel says is left, and rebind (broadcast).
            left = await asyncio.to_thread(_remaining_lifetime, self.target)
            self.lease = self._unconfirmed(now, left)
            log.warning(
                "%s: no answer to INIT-REBOOT for %s; rebinding until it expires in %ds",
                self.key, self.target.address, left,
            )  # fmt: skip

    async def _extend(self) -> None:
        """RENEWING (unicast) until T2, REBINDING (broadcast) until expiry."""
        xid = self.client.new_xid()
        while await self.still_ours():
            lease = self.lease
            assert lease is not None
            now = self.clock.time()
            if now >= lease.expires_at:
                await self._lost("the lease expired without renewal")
                return
            rebinding = now >= lease.rebind_at or lease.server_id.is_unspecified
            state = LeaseState.REBINDING if rebinding else LeaseState.RENEWING
            if lease.state != state:
                xid = self.client.new_xid()
                self.lease = lease.with_state(state)
            phase_end = lease.expires_at if rebinding else lease.rebind_at
            wait = min(self.client.renew_retransmit(phase_end - now), phase_end - now)
            opener = functools.partial(self._open, unicast_from=lease.address.ip)
            result = await renew_once(self.client, opener, lease, xid, rebinding, wait)
            if isinstance(result, Bound):
                await self._bound(result)
                return
            if isinstance(result, Nak):
                await self._lost(f"NAK from {result.server}: {result.message}")
                return

    async def _reacquire(self) -> None:
        attempt = 0
        while await self.still_ours():
            prefer = self.lease.address.ip if self.lease else self.target.address.ip
            tr = await self._open()
            try:
                bound = await self.client.obtain(tr, self.reacquire_timeout, prefer=prefer)
            except (DhcpTimeout, DhcpNaked) as exc:
                log.error("%s: the node has no lease: re-acquiring failed: %s", self.key, exc)
            else:
                await self._bound(bound)
                return
            finally:
                tr.close()
            attempt += 1
            await self.clock.sleep(min(60.0, 2.0**attempt) * random.uniform(0.75, 1.25))

    async def _bound(self, bound: Bound) -> None:
        lease = bind(
            bound.info,
            where=self.lease or self._request(),
            inode=0,
            server_mac=bound.server_mac,
            sent_at=bound.sent_at,
        )
        old = self.target.address
        if not await self.still_ours():
            return
        if lease.address != old:
            log.error(
                "%s: THE NODE'S ADDRESS CHANGES: the DHCP server %s gave %s instead of %s; "
                "replacing it on %s (and the default route via %s)",
                self.key, lease.server_id, lease.address, old, self.target.bridge, lease.router,
            )  # fmt: skip
            await asyncio.to_thread(
                _replace_address, self.target.bridge, old, lease, self.clock.time()
            )
            self.target = NodeLeaseTarget(
                self.target.bridge, self.target.mac, self.target.client_id, lease.address
            )
            if self.on_change is not None:
                await self.on_change(old, lease.address)
        else:
            await asyncio.to_thread(_set_lifetime, self.target.bridge, lease, self.clock.time())
        self.lease = lease
        await asyncio.to_thread(self._save, lease)
        log.info(
            "%s: state=BOUND address=%s server=%s lease=%.0fs renew_in=%.0fs",
            self.key, lease.address, lease.server_id, lease.lease_time,
            lease.renew_at - self.clock.time(),
        )  # fmt: skip

    async def _lost(self, why: str) -> None:
        log.error(
            "%s: the node's lease on %s is lost (%s); asking for a new one (INIT)",
            self.key, self.target.address, why,
        )  # fmt: skip
        base = self.lease or self._unconfirmed(self.clock.time(), 0)
        self.lease = base.with_state(LeaseState.EXPIRED)

    # -- helpers ---------------------------------------------------------------------------------

    async def _sleep_until(self, deadline: float) -> bool:
        """Sleep until ``deadline`` (wall clock); False when the takeover went meanwhile."""
        while True:
            remaining = deadline - self.clock.time()
            if remaining <= 0:
                return True
            await self.clock.sleep(min(remaining, _CHECK_EVERY))
            if not await self.still_ours():
                return False

    async def _open(self, unicast_from: IPv4Address | None = None) -> Transport:
        return await self.transports.open(
            # The agent's own namespace, by fd: open_netns refuses it as a pod's path.
            Target(
                netns_path=self._netns,
                ifname=self.target.bridge,
                mac=self.target.mac,
                netns_fd=own_netns_fd(),
            ),
            unicast_from=unicast_from,
        )

    def _request(self) -> LeaseRequest:
        return LeaseRequest(
            key=self.key,
            netns_path=self._netns,
            netns_fd=-1,
            ifname=self.target.bridge,
            mac=self.target.mac,
            client_id=self.target.client_id,
            hostname=None,
            meta={"bridge": self.target.bridge, "node": "1"},
        )

    def _unconfirmed(self, now: float, left: int) -> Lease:
        """A lease nobody confirmed yet: the kernel's remaining lifetime, any server."""
        req = self._request()
        return Lease(
            address=self.target.address,
            server_id=IPv4Address(0),
            router=None,
            dns_servers=(),
            domain=None,
            search=(),
            mtu=None,
            routes=(),
            lease_time=float(left),
            t1=0.0,
            t2=0.0,
            key=req.key,
            bound_at=now,
            renew_at=now,
            rebind_at=now,
            expires_at=now + left,
            state=LeaseState.REBINDING,
            netns_path=req.netns_path,
            netns_inode=0,
            ifname=req.ifname,
            mac=req.mac.lower(),
            client_id=req.client_id,
            hostname=None,
            meta=dict(req.meta),
        )

    def _load(self) -> Lease | None:
        data = statefile.read_json(self.path)
        if data is None:
            return None
        try:
            lease = from_record(data)
        except (KeyError, TypeError, ValueError) as exc:
            log.error("%s: ignoring %s: %s", self.key, self.path, exc)
            return None
        return lease if lease.key == self.key else None

    def _save(self, lease: Lease) -> None:
        statefile.write_json(self.path, to_record(lease))


# -- the kernel side (the agent's namespace, worker threads) -------------------------------------


def _remaining_lifetime(target: NodeLeaseTarget) -> int:
    with node_ipr() as ipr:
        index = lookup(ipr, target.bridge)
        for m in ipr.addr("dump"):
            if m["index"] != index or m.get_attr("IFA_LOCAL") != str(target.address.ip):
                continue
            cache = m.get_attr("IFA_CACHEINFO") or {}
            return int(cache.get("ifa_valid", 0))
    return 0


def _set_lifetime(bridge: str, lease: Lease, now: float) -> None:
    """The address's lifetimes = what the lease has left. An address the kernel already
    removed (the lease ran out before this ACK) is added again, with the default route the
    removal of the bridge's last IPv4 address flushed."""
    left = max(1, int(lease.expires_at - now))
    with node_ipr() as ipr:
        index = lookup(ipr, bridge)
        if index is None:
            return
        present = any(
            m["index"] == index and m.get_attr("IFA_LOCAL") == str(lease.address.ip)
            for m in ipr.addr("dump")
        )
        if not present:
            log.error("node lease: %s had gone from %s; adding it again", lease.address, bridge)
            _add(ipr, index, bridge, lease, left)
            _default_route(ipr, index, lease)
            return
        ipr.addr(
            "replace",
            index=index,
            address=str(lease.address.ip),
            local=str(lease.address.ip),
            prefixlen=lease.address.network.prefixlen,
            valid_lft=left,
            preferred_lft=left,
        )


def _add(ipr: Netlink, index: int, bridge: str, lease: Lease, left: int) -> None:
    with tolerate(EEXIST):
        ipr.addr(
            "add",
            index=index,
            address=str(lease.address.ip),
            local=str(lease.address.ip),
            prefixlen=lease.address.network.prefixlen,
            broadcast=str(lease.address.network.broadcast_address),
            label=bridge,
            valid_lft=left,
            preferred_lft=left,
        )


def _default_route(ipr: Netlink, index: int, lease: Lease) -> None:
    if lease.router is not None:
        ipr.route(
            "replace",
            family=2,
            dst_len=0,
            gateway=str(lease.router),
            oif=index,
            table=RT_TABLE_MAIN,
        )


def _replace_address(bridge: str, old: IPv4Interface, lease: Lease, now: float) -> None:
    """New address first (never an address-less node), then the old one off, then the
    default route via the lease's router (removing the old address may have flushed it).

    In the old address's subnet the new one is its secondary, and deleting a primary
    deletes its secondaries unless ``promote_secondaries`` is on: it is turned on for the
    bridge, and the new address is added again should it have gone all the same."""
    left = max(1, int(lease.expires_at - now))
    write_sysctl(f"net/ipv4/conf/{bridge}/promote_secondaries", "1")
    with node_ipr() as ipr:
        index = lookup(ipr, bridge)
        if index is None:
            return
        _add(ipr, index, bridge, lease, left)
        with tolerate(errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH):  # gone already
            ipr.addr(
                "del",
                index=index,
                address=str(old.ip),
                local=str(old.ip),
                prefixlen=old.network.prefixlen,
            )
        _add(ipr, index, bridge, lease, left)
        _default_route(ipr, index, lease)
