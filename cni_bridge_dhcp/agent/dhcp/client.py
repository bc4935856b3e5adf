"""The RFC 2131 client of one pod, on a Transport and a Clock.

``DhcpClient.obtain`` runs INIT, SELECTING, REQUESTING, the ARP probe and DECLINE until it
holds a lease or its deadline passes (``exchange``); ``reboot`` runs INIT-REBOOT. ``renew``
runs one RENEWING or REBINDING attempt. ``release`` sends DHCPRELEASE. Keeping time (when to
renew, what to do on loss) is the LeaseManager's job (``upkeep``). What every exchange
shares (identity, timing, retransmission, reply checks) is in ``session``; how messages
are built in ``messages``.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address

from .codec import MessageType
from .exchange import Exchange
from .lease import ack_info
from .messages import max_size, nak_text, server_of, usable
from .session import Bound, ClientSession, Nak, Stats
from .transport import Transport

log = logging.getLogger(__name__)


class DhcpClient(ClientSession):
    # -- acquisition ---------------------------------------------------------------------

    async def obtain(
        self,
        tr: Transport,
        timeout: float,
        *,
        prefer: IPv4Address | None = None,
    ) -> Bound:
        """A new lease (INIT .. BOUND), or DhcpTimeout / DhcpNaked. ``prefer`` goes into
        DISCOVER as option 50, a hint the server may ignore."""
        self._started = self.clock.monotonic()
        stats = self.last_stats = Stats()
        ex = Exchange(self, tr, self._started + timeout, stats)
        try:
            bound = await ex.run(prefer)
        except BaseException:
            # Timeout, NAKs or cancellation: whatever a server acknowledged (or may have
            # committed to a REQUEST whose ACK is late) goes back instead of leaking.
            await ex.release_held(keep=None)
            raise
        await ex.release_held(keep=(bound.info.address.ip, bound.info.server_id))
        return bound

    # -- bound -----------------------------------------------------------------------------

    async def reboot(
        self, tr: Transport, address: IPv4Address, timeout: float
    ) -> Bound | Nak | None:
        """INIT-REBOOT: ask for ``address`` again (after an agent restart); None when no
        server answered within ``reboot_attempts`` REQUESTs or ``timeout``."""
        self._started = self.clock.monotonic()
        self.last_stats = Stats()
        deadline = self._started + timeout
        xid = self.new_xid()
        sent_at = self.clock.time()
        log.info("%s: INIT-REBOOT requesting %s", self.label, address)
        for attempt in range(self.timing.reboot_attempts):
            now = self.clock.monotonic()
            if now >= deadline:
                break
            await tr.send_broadcast(
                self._message(MessageType.REQUEST, xid, requested=address, max_size=max_size(tr))
            )
            self.last_stats.count("REQUEST")
            until = min(deadline, now + self.backoff(attempt))
            got = await self.wait_reply(tr, xid, (MessageType.ACK, MessageType.NAK), until)
            if got is None:
                continue
            msg, rx = got
            if msg.message_type == MessageType.NAK:
                nak = Nak(server_of(msg, rx), nak_text(msg))
                log.info("%s: INIT-REBOOT NAKed by %s (%s)", self.label, nak.server, nak.message)
                return nak
            if not usable(msg.yiaddr):
                continue
            return Bound(ack_info(msg, rx.src_ip), rx.src_mac, sent_at)
        return None

    async def renew(
        self,
        tr: Transport,
        xid: int,
        *,
        address: IPv4Address,
        server_id: IPv4Address,
        server_mac: str | None,
        rebinding: bool,
        until: float,
    ) -> Bound | Nak | None:
        """Send one RENEWING (unicast) or REBINDING (broadcast) REQUEST, wait until
        monotonic ``until`` for its answer."""
        self._started = self.clock.monotonic()
        payload = self._message(MessageType.REQUEST, xid, ciaddr=address, max_size=max_size(tr))
        sent_at = self.clock.time()
        if rebinding:
            await tr.send_broadcast(payload, src=address)
        else:
            await tr.send_unicast(payload, src=address, dst=server_id, dst_mac=server_mac)
        got = await self.wait_reply(tr, xid, (MessageType.ACK, MessageType.NAK), until)
        if got is None:
            return None
        msg, rx = got
        server = server_of(msg, rx)
        if not rebinding and server != server_id:
            log.debug("%s: ignoring a renew reply from %s, not our server", self.label, server)
            return None
        if msg.message_type == MessageType.NAK:
            return Nak(server, nak_text(msg))
        if not usable(msg.yiaddr):
            return None
        return Bound(ack_info(msg, server), rx.src_mac or server_mac, sent_at)

    def renew_retransmit(self, remaining: float) -> float:
        """RFC 2131 4.4.5: wait half the time left to T2 (or expiry), within bounds."""
        return min(
            self.timing.renew_max_retransmit, max(self.timing.renew_min_retransmit, remaining / 2)
        )

    async def release(
        self,
        tr: Transport,
        *,
        address: IPv4Address,
        server_id: IPv4Address,
        server_mac: str | None,
    ) -> None:
        payload = self._message(
            MessageType.RELEASE, self.new_xid(), ciaddr=address, server_id=server_id, full=False
        )
        await tr.send_unicast(payload, src=address, dst=server_id, dst_mac=server_mac)

    async def decline(self, tr: Transport, *, address: IPv4Address, server_id: IPv4Address) -> None:
        """DHCPDECLINE of ``address`` (found in use on the link), broadcast from 0.0.0.0."""
        payload = self._message(
            MessageType.DECLINE, self.new_xid(), requested=address, server_id=server_id, full=False
        )
        await tr.send_broadcast(payload)
        self.last_stats.count("DECLINE")
