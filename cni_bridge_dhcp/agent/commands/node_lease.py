"""Wiring the node lease keeper (agent/dhcp/nodelease.py) to the uplink takeover's record of
a DHCP-leased node address (agent/uplink/dhcpclients.py): started after a takeover that
recorded one, re-adopted at agent start, stopped when ``uplink restore`` removed it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from ipaddress import IPv4Interface
from pathlib import Path

from ..dhcp.nodelease import NodeLeaseKeeper, NodeLeaseTarget
from ..uplink import current_state
from ..uplink.dhcpclients import NodeDhcp, follow_node_address, load_record

log = logging.getLogger(__name__)


class NodeLeaseSupervisor:
    def __init__(self, state_dir: Path, on_change: Callable[[], None] | None = None) -> None:
        self.state_dir = state_dir
        self.on_change = on_change  # the node address changed: forget cached datapaths
        self.keeper: NodeLeaseKeeper | None = None

    async def ensure(self) -> None:
        """Start the keeper when a takeover recorded a DHCP-leased node address."""
        if self.keeper is not None and self.keeper.running():
            return
        # Inline, not in a worker thread: on the usual node this is one failed open of an
        # absent record, on every ADD.
        record = self._current()
        if record is None:
            return
        target = NodeLeaseTarget(
            bridge=record.bridge,
            mac=record.mac,
            client_id=bytes.fromhex(record.client_id),
            address=record.interface,
        )
        self.keeper = NodeLeaseKeeper(
            self.state_dir, target, still_ours=self._still_ours, on_change=self._changed
        )
        log.info(
            "keeping the node's DHCP lease for %s on %s (client id %s)",
            record.address, record.bridge, record.client_id or "none",
        )  # fmt: skip
        self.keeper.start()

    async def close(self) -> None:
        if self.keeper is not None:
            await self.keeper.close()

    def _current(self) -> NodeDhcp | None:
        record = load_record(self.state_dir)
        if record is None:  # the usual node: skip reading the uplink journal on every ADD
            return None
        state = current_state(self.state_dir)
        if state is None or state.bridge != record.bridge:
            return None
        return record

    async def _still_ours(self) -> bool:
        return await asyncio.to_thread(self._current) is not None

    async def _changed(self, old: IPv4Interface, new: IPv4Interface) -> None:
        await asyncio.to_thread(follow_node_address, self.state_dir, old, new)
        if self.on_change is not None:
            self.on_change()
