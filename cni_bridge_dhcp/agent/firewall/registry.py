"""The agent's firewalls, one per requested ``firewallBackend``, and the pod rules in them.

All firewall work runs in a worker thread under one node-wide lock (python-iptables and
libnftables are not safe to drive from two threads at once). The rules of every ready
attachment are re-asserted periodically and at start: a firewall reload (or a switch to a
DROP policy) while the agent is down or running must not leave pods' traffic dropped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import ParamSpec, Protocol, TypeVar

from ..state.attachments import Attachment, AttachmentState, AttachmentStore, FirewallChoice
from .facade import Firewall
from .model import PodRules

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")


class Named(Protocol):
    @property
    def name(self) -> str: ...


class PodFirewall(Protocol):
    """What the registry and the handlers use of a ``Firewall`` (a test may pass a fake)."""

    @property
    def backends(self) -> Sequence[Named]: ...

    def ensure_bridge(self, bridge: str) -> None: ...

    def remove_bridge(self, bridge: str) -> None: ...

    def add_pod(self, pod: PodRules) -> None: ...

    def del_pod(self, network: str, container_id: str, ifname: str) -> None: ...

    def check_pod(self, pod: PodRules) -> list[str]: ...

    def gc(self, network: str, keep: set[tuple[str, str]]) -> list[tuple[str, str]]: ...

    def reassert(self, pods: Iterable[PodRules]) -> list[str]: ...


def pod_rules(att: Attachment) -> PodRules:
    """The rules an attachment's record calls for."""
    fw = att.firewall or FirewallChoice()
    return PodRules(
        network=att.network,
        container_id=att.container_id,
        ifname=att.ifname,
        bridge=att.bridge,
        host_veth=att.host_veth,
        mac=att.mac,
        ips=tuple(ipaddress.ip_interface(a) for a in att.ips),
        ip_masq=fw.ip_masq,
        macspoofchk=fw.macspoofchk,
        isolated=fw.port_isolation,
    )


class FirewallRegistry:
    def __init__(
        self, store: AttachmentStore, make: Callable[[str], PodFirewall] = Firewall
    ) -> None:
        self._store = store
        self._make = make
        self._firewalls: dict[str, PodFirewall] = {}
        self._thread_lock = threading.Lock()
        # Held by whoever derives firewall rules from attachment records and applies them,
        # so a re-assertion never puts back the rules of an address a pod just moved off.
        self.lock = asyncio.Lock()
        # (network, container id, ifname) -> when a DEL removed its rules (see remove_pod_rules)
        self._rules_removed: dict[tuple[str, str, str], float] = {}

    async def firewall_for(self, requested: str) -> PodFirewall:
        fw = self._firewalls.get(requested)
        if fw is None:
            fw = await self.run(self._make, requested)
            self._firewalls[requested] = fw
        return fw

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args)`` in a worker thread, under the node-wide firewall lock."""

        def locked() -> T:
            with self._thread_lock:
                return fn(*args, **kwargs)

        return await asyncio.to_thread(locked)

    async def remove_pod_rules(self, network: str, container_id: str, ifname: str) -> None:
        # Under the re-assertion's lock, and remembered: a DEL removes the rules before the
        # record, and a re-assertion working from the still-present record would put them
        # back for good.
        async with self.lock:
            self._rules_removed[(network, container_id, ifname)] = time.time()
            fw = await self.firewall_for("auto")
            await self.run(fw.del_pod, network, container_id, ifname)
            for other in list(self._firewalls.values()):
                if other is not fw:
                    await self.run(other.del_pod, network, container_id, ifname)

    async def gc_rules(self, network: str, keep: set[tuple[str, str]]) -> int:
        removed = 0
        fw = await self.firewall_for("auto")
        for candidate in {id(f): f for f in [fw, *self._firewalls.values()]}.values():
            removed += len(await self.run(candidate.gc, network, keep))
        return removed

    async def remove_bridge_rules(self, bridge: str) -> None:
        """The bridge's own rules, once its last pod is gone (the DEL that removed the last
        record on it says so: ``AttachmentStore.remove_was_last``)."""
        for fw in list(self._firewalls.values()):
            await self.run(fw.remove_bridge, bridge)

    async def reassert(self) -> list[str]:
        """Re-create the missing rules of every ready attachment; names what was missing."""
        async with self.lock:
            restored: list[str] = []
            every = self._store.all()
            present = {(a.network, a.container_id, a.ifname) for a in every}
            for key in [k for k in self._rules_removed if k not in present]:
                del self._rules_removed[key]
            ready = [
                a
                for a in every
                if a.state == AttachmentState.READY
                and self._rules_removed.get((a.network, a.container_id, a.ifname), 0) < a.created
            ]
            by_backend: dict[str, list[Attachment]] = {}
            for att in ready:
                by_backend.setdefault(att.firewall_backend, []).append(att)
            for requested, atts in by_backend.items():
                fw = await self.firewall_for(requested)
                for bridge in {a.bridge for a in atts}:
                    await self.run(fw.ensure_bridge, bridge)
                restored += await self.run(fw.reassert, [pod_rules(a) for a in atts])
            return restored

    async def reassert_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                restored = await self.reassert()
                if restored:
                    log.warning(
                        "firewall rules were missing and have been restored: %s",
                        ", ".join(restored),
                    )
            except Exception:
                log.exception("periodic firewall re-assertion failed")

    def backends(self) -> dict[str, list[str]]:
        """For the status report: requested backend -> the backends in use."""
        return {k: [b.name for b in fw.backends] for k, fw in self._firewalls.items()}
