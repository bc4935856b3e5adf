"""What the DHCPv4 ``LeaseManager`` and the DHCPv6 ``Lease6Manager`` keep alike: the held
leases by attachment key, each with its client and upkeep task, a lock per key, the
journal written before a change is shown, the change hook, and the upkeep loop (sleep
until T1, extend; re-acquire a lost lease; forget a pod that is gone). How a lease is
extended, re-acquired or given back differs (RFC 2131, RFC 8415) and stays with each
protocol's manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Generic, Protocol, TypeVar

from ...cni.errors import CNIError
from ..runtime.shielded import to_completion
from ..state.recordjournal import RecordJournal
from .clock import Clock
from .transport import Gone

log = logging.getLogger(__name__)

_MAX_SLEEP = 60.0  # re-read the wall clock at least this often (suspend, clock steps)
_RETRY_AFTER_BUG = 5.0
# The lost state's value in both protocols' enums (LeaseState, Lease6State): the address is
# off the pod and the upkeep re-acquires.
EXPIRED = "EXPIRED"


class HeldLease(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def state(self) -> StrEnum: ...

    @property
    def renew_at(self) -> float: ...

    @property
    def address(self) -> IPv4Interface | IPv6Interface: ...


L = TypeVar("L", bound=HeldLease)
C = TypeVar("C")


@dataclass
class Entry(Generic[L, C]):
    lease: L
    client: C
    task: asyncio.Task[None] | None = None


async def durably(fn: Callable[..., object], *args: object) -> None:
    """A blocking journal operation in a thread, finished even if our task is cancelled."""
    await to_completion(asyncio.to_thread(fn, *args))


async def cancel_task(task: asyncio.Task[None] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class LeaseBook(ABC, Generic[L, C]):
    """``protocol`` names the leases in logs ("DHCP", "DHCPv6")."""

    protocol = "DHCP"

    def __init__(
        self,
        journal: RecordJournal[L],
        *,
        clock: Clock,
        on_change: Callable[[str, L | None, L | None], Awaitable[None]] | None,
        reacquire_max_backoff: float,
        rng: random.Random,
    ) -> None:
        self.journal = journal
        self.clock = clock
        self.on_change = on_change
        self.reacquire_max_backoff = reacquire_max_backoff
        self.rng = rng
        self._entries: dict[str, Entry[L, C]] = {}
        # Weak: a key's lock lives while someone holds or awaits it, so keys of long-gone
        # pods do not accumulate.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def get(self, key: str) -> L | None:
        entry = self._entries.get(key)
        return entry.lease if entry else None

    def leases(self) -> list[L]:
        return [entry.lease for entry in self._entries.values()]

    async def close(self) -> None:
        """Stop every upkeep task; release nothing, keep the journal (the next agent
        re-adopts)."""
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._entries.clear()

    def held_by_other(self, address: IPv4Address | IPv6Address, key: str) -> str | None:
        """The key of another live attachment whose lease holds ``address``, if any."""
        for other, entry in self._entries.items():
            if other != key and entry.lease.address.ip == address:
                return other
        return None

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
            await durably(self.journal.remove, key)
        except CNIError as exc:
            log.error("%s: %s", key, exc.msg)

    async def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            await cancel_task(entry.task)
        await durably(self.journal.remove, key)

    async def _commit(self, entry: Entry[L, C], lease: L) -> None:
        """Journal first, then show: whatever get() shows is on disk."""
        try:
            await durably(self.journal.write, lease)
        except CNIError as exc:
            # The lease itself is fine; a restart would re-adopt from the older record.
            log.error("%s: cannot journal the %s lease: %s", lease.key, self.protocol, exc.msg)
        entry.lease = lease

    async def _hook(self, key: str, old: L | None, new: L | None) -> None:
        if self.on_change is None:
            return
        try:
            await self.on_change(key, old, new)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: %s lease change hook failed", key, self.protocol)

    async def _sleep_until(self, deadline: float) -> None:
        while (remaining := deadline - self.clock.time()) > 0:
            await self.clock.sleep(min(remaining, _MAX_SLEEP))

    # -- upkeep: one task per lease --------------------------------------------------------

    async def _maintain(self, entry: Entry[L, C], *, reboot: bool = False) -> None:
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
                    log.exception("%s: %s lease upkeep failed; retrying", key, self.protocol)
                    await self.clock.sleep(_RETRY_AFTER_BUG)
        except Gone as exc:
            if self._entries.get(key) is entry:
                del self._entries[key]
                await self._pod_gone(entry, exc)

    async def _reboot(self, entry: Entry[L, C]) -> None:
        """Confirm a lease re-adopted after its rebinding time (RFC 2131's INIT-REBOOT); only
        the DHCPv4 manager re-adopts with ``reboot``."""
        raise NotImplementedError

    @abstractmethod
    async def _extend(self, entry: Entry[L, C]) -> None:
        """Renew, then rebind, until the lease is bound again or lost."""

    async def _reacquire(self, entry: Entry[L, C]) -> None:
        """A new lease for an attachment that lost its own: attempts 1, 2, 4 ... s apart up
        to ``reacquire_max_backoff``, each +-25 % so that pods that lost their leases
        together do not ask together."""
        attempt = 0
        while not await self._try_reacquire(entry):
            delay = min(self.reacquire_max_backoff, 2.0**attempt) * self.rng.uniform(0.75, 1.25)
            attempt += 1
            await self.clock.sleep(delay)

    @abstractmethod
    async def _try_reacquire(self, entry: Entry[L, C]) -> bool:
        """One attempt of ``_reacquire``: True once the entry holds a lease again."""

    @abstractmethod
    async def _pod_gone(self, entry: Entry[L, C], why: Gone) -> None:
        """The lease's pod interface or namespace is gone (its entry is off the table)."""
