"""What follows a pod's lease when the DHCP server moves it to another address.

The DHCP layer swaps the address (and restores the routes) on the pod interface itself;
this hook brings the rest of the node along: the pod's FORWARD/anti-spoofing rules, which
name its address, the attachment record (status, CHECK, the periodic firewall
re-assertion read it) and the address-book hint for the pod's next sandbox.

The work runs to completion even when the lease task is cancelled meanwhile (a DEL
releasing the lease cancels it): DEL removes rules and record only after the release has
waited for the task, so nothing is re-created behind it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..dhcp import Lease
from ..dhcp.manager import default_on_change
from ..runtime.shielded import to_completion

if TYPE_CHECKING:
    from ..service import Agent

log = logging.getLogger(__name__)


async def on_lease_change(agent: Agent, key: str, old: Lease | None, new: Lease | None) -> None:
    await default_on_change(key, old, new)
    if new is not None:
        await to_completion(_follow(agent, key, new))


async def _follow(agent: Agent, key: str, lease: Lease) -> None:
    async with agent.pod_rules_lock:
        att = await asyncio.to_thread(agent.store.get, key)
        if att is None or att.state != "ready" or att.ipam != "dhcp":
            return  # an ADD still running records the address itself
        ips = [str(lease.address)]
        if att.ips == ips:
            return
        before = att.ips
        att.ips = ips
        if att.result.get("role") != "ipam":  # as IPAM, the rules are the main plugin's
            fw = await agent.firewall_for(att.firewall_backend)
            rules = agent.pod_rules(att)

            def swap() -> None:
                fw.del_pod(att.network, att.container_id, att.ifname)
                fw.add_pod(rules)

            try:
                await agent.in_firewall(swap)
            except Exception:
                log.exception("%s: firewall rules for %s not updated", key, lease.address)
        try:
            await asyncio.to_thread(agent.store.put, att)
        except Exception as exc:
            log.error("%s: attachment record keeps %s: %s", key, before, exc)
        await asyncio.to_thread(agent.addressbook.remember, lease.client_id, lease.address.ip)
        # A warning: the runtime was told the old address and nothing can update it.
        log.warning(
            "%s: the DHCP server moved pod %s from %s to %s; its rules and record follow, "
            "but the runtime (pod status, CHECK's prevResult) still has the old address",
            key,
            f"{att.pod_namespace}/{att.pod_name}" if att.pod_name else att.container_id,
            ", ".join(before) or "none",
            lease.address,
        )
