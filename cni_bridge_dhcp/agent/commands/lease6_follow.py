"""What follows a pod's DHCPv6 lease when it comes back at another address (after a loss,
or a server that moves it): the attachment record's ips and the pod's firewall rules, as
lease_follow.py does for the DHCPv4 lease. The pod-side address work is the DHCPv6
layer's own (dhcp/v6/manager.default_on_change6)."""

from __future__ import annotations

import asyncio
import logging

from ..dhcp.v6.lease import Lease6
from ..dhcp.v6.manager import default_on_change6
from ..firewall.registry import pod_rules
from ..runtime.shielded import to_completion
from ..state.attachments import AttachmentState
from .types import Services

log = logging.getLogger(__name__)


async def on_lease6_change(
    services: Services, key: str, old: Lease6 | None, new: Lease6 | None
) -> None:
    await default_on_change6(key, old, new)
    if new is not None and old is not None and old.address.ip != new.address.ip:
        await to_completion(_follow(services, key, old, new))


async def _follow(services: Services, key: str, old: Lease6, new: Lease6) -> None:
    async with services.firewall.lock:
        att = await asyncio.to_thread(services.store.get, key)
        if att is None or att.state != AttachmentState.READY or att.ipam != "dhcp":
            return
        before = att.ips
        ips = [a for a in att.ips if a.split("/")[0] != str(old.address.ip)]
        att.ips = [*ips, str(new.address)]
        if att.role != "ipam":
            fw = await services.firewall.firewall_for(att.firewall_backend)
            rules = pod_rules(att)

            def swap() -> None:
                fw.del_pod(att.network, att.container_id, att.ifname)
                fw.add_pod(rules)

            try:
                await services.firewall.run(swap)
            except Exception:
                log.exception("%s: firewall rules for %s not updated", key, new.address)
        try:
            await asyncio.to_thread(services.store.put, att)
        except Exception as exc:
            log.error("%s: attachment record keeps %s: %s", key, before, exc)
        log.warning(
            "%s: the pod's DHCPv6 address moved from %s to %s; its rules and record follow, "
            "but the runtime still has the old address",
            key,
            old.address,
            new.address,
        )
