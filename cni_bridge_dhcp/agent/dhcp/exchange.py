"""Obtaining a new lease: INIT -> SELECTING -> REQUESTING passes, the ARP probe of the
offered address and DECLINE, until BOUND or the caller's deadline.

A slow server (udhcpd ARP-pings each new address for ~2 s, one packet at a time) may
answer after we retransmitted and moved on: OFFERs and ACKs to earlier xids of the
exchange still count, until the deadline. Whatever a server may hold for us and we do not
keep is released at the end (``release_held``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from ipaddress import IPv4Address

from .codec import Message, MessageType
from .lease import ack_info
from .messages import max_size, nak_text, server_of, usable
from .session import Bound, ClientSession, DhcpNaked, DhcpTimeout, Nak, Stats
from .transport import Received, Transport

log = logging.getLogger(__name__)

Reply = tuple[Message, Received]
# What one pass ends with: a lease, a NAK, the address it declined, or None (deadline
# passed, or REQUESTING got no answer: the next pass starts over at INIT).
Outcome = Bound | Nak | IPv4Address | None


@dataclass(frozen=True)
class _Asked:
    server: IPv4Address
    address: IPv4Address
    sent_at: float  # wall time of the first REQUEST with this xid


@dataclass(frozen=True)
class _Offer:
    reply: Reply
    address: IPv4Address
    server: IPv4Address


class Exchange:
    """One obtain(): its xids, what each REQUEST asked of whom, and which addresses a server
    may hold for us (REQUESTed or ACKed, neither NAKed nor declined) with the server's MAC."""

    def __init__(
        self, session: ClientSession, tr: Transport, deadline: float, stats: Stats
    ) -> None:
        self.session = session
        self.label = session.label
        self.clock = session.clock
        self.timing = session.timing
        self.tr = tr
        self.deadline = deadline
        self.stats = stats
        self.max_size = max_size(tr)
        self.xids: list[int] = []
        self.requested: dict[int, _Asked] = {}
        self.held: dict[tuple[IPv4Address, IPv4Address], str | None] = {}
        self.acked: set[tuple[IPv4Address, IPv4Address]] = set()

    async def run(self, prefer: IPv4Address | None) -> Bound:
        """Passes until one ends BOUND; pauses after a NAK or a DECLINE; DhcpTimeout or
        DhcpNaked when it cannot."""
        declines = 0
        while self.clock.monotonic() < self.deadline:
            result = await self._one_pass(prefer)
            if isinstance(result, Bound):
                return result
            if isinstance(result, Nak):
                self._naked(result)
                prefer = None
                pause = min(self.timing.nak_pause * 2 ** (self.stats.naks - 1), 1.0)
                await self._pause(pause * self.session.rng.uniform(0.5, 1.5))
            elif isinstance(result, IPv4Address):  # declined
                self.stats.declines += 1
                declines += 1
                if prefer == result:
                    prefer = None
                await self._pause(min(self.timing.decline_pause * (2 ** (declines - 1)), 5.0))
        raise DhcpTimeout(self.stats.summary())

    def _naked(self, nak: Nak) -> None:
        self.stats.naks += 1
        log.info("%s: NAK from %s (%s), restarting INIT", self.label, nak.server, nak.message)
        if self.stats.naks >= self.timing.max_naks:
            raise DhcpNaked(f"NAKed {self.stats.naks} times, last by {nak.server}: {nak.message}")

    async def _pause(self, seconds: float) -> None:
        await self.clock.sleep(min(seconds, max(0.0, self.deadline - self.clock.monotonic())))

    async def _one_pass(self, prefer: IPv4Address | None) -> Outcome:
        """INIT -> SELECTING -> REQUESTING once, with the ARP probe of the offered address
        running while REQUEST/ACK is in flight (its verdict is needed only after the ACK)."""
        xid = self.session.new_xid()
        earlier = tuple(self.xids)
        self.xids.append(xid)
        offer = await self._select(xid, prefer, earlier)
        if not isinstance(offer, _Offer):
            return offer  # the deadline, or a late ACK to an earlier REQUEST
        self.stats.offers += 1
        log.debug("%s: OFFER %s from %s", self.label, offer.address, offer.server)
        probe = self._probe(offer.address)
        try:
            ack = await self._request(xid, offer)
            if ack is None:
                return None
            msg, _rx = ack
            if msg.message_type == MessageType.NAK:
                self.held.pop((offer.address, offer.server), None)
                return Nak(offer.server, nak_text(msg))
            if not usable(msg.yiaddr):
                return None
            return await self._bound_or_declined(ack, (offer.address, probe))
        finally:
            await _stop(probe)

    # -- SELECTING -------------------------------------------------------------------------

    async def _select(
        self, xid: int, prefer: IPv4Address | None, earlier: tuple[int, ...]
    ) -> _Offer | Outcome:
        """DISCOVER, retransmitted, until a usable OFFER; or what a late ACK to an earlier
        REQUEST of this exchange gives; or None at the deadline."""
        attempt = 0
        while True:
            now = self.clock.monotonic()
            if now >= self.deadline:
                return None
            await self.tr.send_broadcast(
                self.session._message(
                    MessageType.DISCOVER, xid, requested=prefer, max_size=self.max_size
                )
            )
            self.stats.count("DISCOVER")
            until = min(self.deadline, now + self.session.backoff(attempt))
            attempt += 1
            got = await self._offer_or_late_ack(xid, until, earlier)
            if got is not None:
                return got

    async def _offer_or_late_ack(
        self, xid: int, until: float, earlier: tuple[int, ...]
    ) -> _Offer | Bound | IPv4Address | None:
        """The first usable OFFER before ``until`` (None: time to retransmit), or the outcome
        of a late ACK to an earlier pass's REQUEST."""
        while True:
            got = await self.session.wait_reply(
                self.tr, xid, (MessageType.OFFER, MessageType.ACK), until, also=earlier
            )
            if got is None:
                return None
            msg, rx = got
            if msg.message_type == MessageType.ACK:
                if self._late_ack(got):
                    log.info("%s: late ACK to xid %#x taken", self.label, msg.xid)
                    return await self._bound_or_declined(got, None)
                continue
            server = server_of(msg, rx)
            if usable(msg.yiaddr) and usable(server):
                return _Offer(got, msg.yiaddr, server)

    def _late_ack(self, reply: Reply) -> bool:
        """An ACK to a REQUEST of an earlier pass, from the server that REQUEST named."""
        msg, rx = reply
        asked = self.requested.get(msg.xid)
        return (
            msg.message_type == MessageType.ACK
            and asked is not None
            and server_of(msg, rx) == asked.server
            and usable(msg.yiaddr)
        )

    # -- REQUESTING ------------------------------------------------------------------------

    async def _request(self, xid: int, offer: _Offer) -> Reply | None:
        """REQUEST the offered address, retransmitted; the ACK or NAK of the offering server
        (or a late ACK to an earlier pass), or None when none came."""
        self.requested[xid] = _Asked(offer.server, offer.address, self.clock.time())
        self.held[(offer.address, offer.server)] = offer.reply[1].src_mac
        for attempt in range(self.timing.request_attempts):
            now = self.clock.monotonic()
            if now >= self.deadline:
                return None
            await self.tr.send_broadcast(
                self.session._message(
                    MessageType.REQUEST,
                    xid,
                    requested=offer.address,
                    server_id=offer.server,
                    max_size=self.max_size,
                )
            )
            self.stats.count("REQUEST")
            until = min(self.deadline, now + self.session.backoff(attempt))
            ack = await self._answer(xid, offer.server, until)
            if ack is not None:
                return ack
        log.info("%s: no ACK from %s for %s; back to INIT", self.label, offer.server, offer.address)
        return None

    async def _answer(self, xid: int, server: IPv4Address, until: float) -> Reply | None:
        """The ACK or NAK to REQUEST ``xid`` from ``server`` before ``until``, or a late ACK."""
        while True:
            got = await self.session.wait_reply(
                self.tr,
                xid,
                (MessageType.ACK, MessageType.NAK),
                until,
                also=tuple(x for x in self.requested if x != xid),
            )
            if got is None:
                return None
            if got[0].xid != xid:
                if self._late_ack(got):
                    return got
                continue  # a stale NAK, or not from the server that REQUEST named
            if server_of(*got) == server:
                return got
            # else another server's answer to our broadcast REQUEST

    # -- BOUND or DECLINE ------------------------------------------------------------------

    async def _bound_or_declined(
        self, ack: Reply, running: tuple[IPv4Address, asyncio.Future[bool]] | None
    ) -> Bound | IPv4Address:
        """After an ACK: the ARP probe's verdict (``running``: the probe already started for
        the offered address), then Bound, or DECLINE and the declined address."""
        msg, rx = ack
        asked = self.requested[msg.xid]
        server = asked.server
        info = ack_info(msg, server)
        if asked.address != info.address.ip:
            self.held.pop((asked.address, server), None)  # the server gave another address
        self.held[(info.address.ip, server)] = rx.src_mac
        self.acked.add((info.address.ip, server))
        log.debug("%s: ACK %s from %s", self.label, info.address, server)
        probe: asyncio.Future[bool] | None = None
        try:
            if running is not None and running[0] == info.address.ip:
                probe = running[1]
            else:
                probe = self._probe(info.address.ip)
            in_use = await probe
            log.debug(
                "%s: ARP probe of %s: %s",
                self.label,
                info.address.ip,
                "in use" if in_use else "free",
            )
            if not in_use:
                return Bound(info, rx.src_mac, asked.sent_at)
            log.warning(
                "%s: %s offered by %s is in use on the link (ARP); sending DECLINE",
                self.label,
                info.address.ip,
                server,
            )
            await self.tr.send_broadcast(
                self.session._message(
                    MessageType.DECLINE,
                    msg.xid,
                    requested=info.address.ip,
                    server_id=info.server_id,
                    full=False,
                )
            )
            self.stats.count("DECLINE")
            self.held.pop((info.address.ip, server), None)  # DECLINE gave it back
            return info.address.ip
        finally:
            if probe is not None:
                await _stop(probe)

    def _probe(self, address: IPv4Address) -> asyncio.Future[bool]:
        return asyncio.ensure_future(
            self.tr.arp_probe(address, self.timing.arp_probe_wait, self.timing.arp_probes)
        )

    # -- the end ---------------------------------------------------------------------------

    async def release_held(self, keep: tuple[IPv4Address, IPv4Address] | None) -> None:
        """DHCPRELEASE every address this exchange may hold at a server, but ``keep``."""
        for (address, server), server_mac in list(self.held.items()):
            if (address, server) == keep:
                continue
            log.info(
                "%s: releasing %s at %s: %s in this exchange but not kept",
                self.label,
                address,
                server,
                "acknowledged" if (address, server) in self.acked else "requested",
            )
            payload = self.session._message(
                MessageType.RELEASE,
                self.session.new_xid(),
                ciaddr=address,
                server_id=server,
                full=False,
            )
            with contextlib.suppress(OSError):
                await self.tr.send_unicast(payload, src=address, dst=server, dst_mac=server_mac)
            self.stats.count("RELEASE")
        self.held.clear()


async def _stop(probe: asyncio.Future[bool]) -> None:
    if not probe.done():
        probe.cancel()
        await asyncio.gather(probe, return_exceptions=True)
