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
from collections.abc import Callable

from ..dhcp import Lease
from ..dhcp.manager import default_on_change
from ..firewall.registry import pod_rules
from ..runtime.shielded import to_completion
from ..state.attachments import Attachment, AttachmentState
from .types import Services

log = logging.getLogger(__name__)


async def on_lease_change(
    services: Services, key: str, old: Lease | None, new: Lease | None
) -> None:
    await default_on_change(key, old, new)
    if new is not None:
        await to_completion(_follow(services, key, new))


async def _follow(services: Services, key: str, lease: Lease) -> None:
    async with services.firewall.lock:
        # The lease is the IPv4 address; an IPv6 (SLAAC, DHCPv6) address of the pod stays.
        moved = await retarget(
            services,
            key,
            lease.address,
            lambda ips: [str(lease.address), *(a for a in ips if ":" in a)],
        )
        if moved is None:
            return
        att, before = moved
        await asyncio.to_thread(services.addressbook.remember, lease.client_id, lease.address.ip)
        # A warning: the runtime was told the old address and nothing can update it.
        log.warning(
            "%s: the DHCP server moved pod %s from %s to %s; its rules and record follow, "
            "but the runtime (pod status, CHECK's prevResult) still has the old address",
            key,
            f"{att.pod_namespace}/{att.pod_name}" if att.pod_name else att.container_id,
            ", ".join(before) or "none",
            lease.address,
        )


async def retarget(
    services: Services,
    key: str,
    address: object,
    new_ips: Callable[[list[str]], list[str]],
) -> tuple[Attachment, list[str]] | None:
    """The READY attachment ``key`` (our DHCP IPAM) gets the ips ``new_ips(att.ips)``, its
    firewall rules (unless we are its IPAM only) and its record follow; the attachment and
    its ips before, or None when there is nothing to follow (an ADD still running records
    the address itself). The caller holds ``services.firewall.lock``; ``address`` names
    the new lease in logs. The DHCPv4 and DHCPv6 (lease6_follow.py) hooks use it."""
    att = await asyncio.to_thread(services.store.get, key)
    if att is None or att.state != AttachmentState.READY or att.ipam != "dhcp":
        return None
    ips = new_ips(att.ips)
    if att.ips == ips:
        return None
    before = att.ips
    att.ips = ips
    if att.role != "ipam":  # as IPAM, the rules are the main plugin's
        fw = await services.firewall.firewall_for(att.firewall_backend)
        rules = pod_rules(att)

        def swap() -> None:
            fw.del_pod(att.network, att.container_id, att.ifname)
            fw.add_pod(rules)

        try:
            await services.firewall.run(swap)
        except Exception:
            log.exception("%s: firewall rules for %s not updated", key, address)
    try:
        await asyncio.to_thread(services.store.put, att)
    except Exception as exc:
        log.error("%s: attachment record keeps %s: %s", key, before, exc)
    return att, before
