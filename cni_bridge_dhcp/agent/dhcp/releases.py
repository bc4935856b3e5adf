"""Giving leases back: DHCPRELEASE from the pod's interface, or from the node for a pod
that is gone (a missed DEL, a namespace deleted under a live lease: node_release)."""

from __future__ import annotations

import contextlib
import logging

from .client import DhcpClient
from .lease import Lease, LeaseState
from .lease_table import LeaseTable, target_of
from .node_release import NodeReleaseError
from .transport import Gone, Transport

log = logging.getLogger(__name__)


async def send_release(client: DhcpClient, tr: Transport, lease: Lease) -> None:
    """DHCPRELEASE of ``lease`` on ``tr`` (pod or node transport), which it closes."""
    try:
        await client.release(
            tr,
            address=lease.address.ip,
            server_id=lease.server_id,
            server_mac=lease.server_mac,
        )
    finally:
        tr.close()


class LeaseReleases(LeaseTable):
    async def _release_vanished(
        self, lease: Lease, why: str, client: DhcpClient | None = None
    ) -> None:
        """DHCPRELEASE for a pod that no longer exists, sent from the node (node_release)."""
        if lease.state == LeaseState.EXPIRED or self.clock.time() >= lease.expires_at:
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
            await send_release(client, tr, lease)
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
        log.info(
            "%s: state=RELEASED address=%s server=%s (%s; DHCPRELEASE sent from the node)",
            lease.key,
            lease.address.ip,
            lease.server_id,
            why,
        )

    async def _release_unjournaled(self, client: DhcpClient, lease: Lease) -> None:
        with contextlib.suppress(Gone, OSError):
            tr = await self.transports.open(target_of(lease), unicast_from=lease.address.ip)
            await send_release(client, tr, lease)
