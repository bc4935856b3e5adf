"""What follows a pod's DHCPv6 lease when it comes back at another address (after a loss,
or a server that moves it): the attachment record's ips and the pod's firewall rules,
through lease_follow.py's ``retarget`` as for the DHCPv4 lease. The pod-side address work
is the DHCPv6 layer's own (dhcp/v6/manager.default_on_change6)."""

from __future__ import annotations

import logging

from ..dhcp.v6.lease import Lease6
from ..dhcp.v6.manager import default_on_change6
from ..runtime.shielded import to_completion
from .lease_follow import retarget
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
        moved = await retarget(
            services,
            key,
            new.address,
            lambda ips: [
                *(a for a in ips if a.split("/")[0] != str(old.address.ip)),
                str(new.address),
            ],
        )
        if moved is None:
            return
        log.warning(
            "%s: the pod's DHCPv6 address moved from %s to %s; its rules and record follow, "
            "but the runtime still has the old address",
            key,
            old.address,
            new.address,
        )
