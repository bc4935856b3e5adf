"""The RFC 2131 client exchanges, on a Transport and a Clock.

``DhcpClient.obtain`` runs INIT, SELECTING, REQUESTING, the ARP probe and DECLINE until it
holds a lease or its deadline passes; ``reboot`` runs INIT-REBOOT. ``renew`` runs one
RENEWING or REBINDING attempt. ``release`` sends DHCPRELEASE. Keeping time (when to renew,
what to do on loss) is the LeaseManager's job.

Retransmission: RFC 2131 4.1 suggests 4 s, 8 s, ... (±1 s), made for slow shared media; on
a veth into a bridge a lost first DISCOVER would then cost 4 s. We start at ~0.3 s and
double, with ±25 % jitter so many pods created together do not retransmit in lockstep,
capped at 4 s, inside the caller's total timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from . import codec
from .clock import Clock
from .codec import BOOTREQUEST, Message, MessageType, Opt
from .lease import CLIENT_OWNED, AckInfo, ack_info, request_list
from .transport import Received, Transport

log = logging.getLogger(__name__)


class DhcpTimeout(Exception):
    pass


class DhcpNaked(Exception):
    pass


@dataclass(frozen=True)
class Timing:
    initial_retransmit: float = 0.3
    max_retransmit: float = 4.0
    jitter: float = 0.25
    request_attempts: int = 4  # REQUEST sends in REQUESTING before going back to INIT
    reboot_attempts: int = 3  # REQUEST sends in INIT-REBOOT before falling back to INIT
    # RFC 5227 probes for 1-3 s; on a bridged LAN an in-use address answers in well under
    # a millisecond (Wi-Fi power-save stations in tens), and the server has usually checked
    # too. 0.1 s, with the probe started as soon as the OFFER arrives (overlapping the
    # REQUEST/ACK round trip), keeps ADD close to the bare exchange. 0 disables probing.
    arp_probe_wait: float = 0.1
    arp_probes: int = 2
    # NAKs within one obtain() before giving up. Servers that do not reserve offered
    # addresses (dnsmasq) NAK the losers when many pods start at once, so a few NAKs are
    # normal; each restart waits a jittered, doubling pause to break the collision.
    max_naks: int = 6
    nak_pause: float = 0.05
    decline_pause: float = 0.2  # RFC 2131 says 10 s; we pause briefly and back off
    renew_min_retransmit: float = 1.0
    renew_max_retransmit: float = 60.0


@dataclass(frozen=True)
class Identity:
    mac: str
    client_id: bytes
    hostname: str | None
    extra_request: tuple[int, ...] = ()
    provide: tuple[tuple[int, bytes], ...] = ()
    broadcast_flag: bool = False
    server_allow_list: tuple[IPv4Address, ...] = ()  # empty: any server


@dataclass(frozen=True)
class Bound:
    info: AckInfo
    server_mac: str | None
    sent_at: float  # wall time of the first REQUEST of the exchange: lease times count from it


@dataclass(frozen=True)
class Nak:
    server: IPv4Address
    message: str


@dataclass
class _Stats:
    sent: dict[str, int] = field(default_factory=dict)
    offers: int = 0
    naks: int = 0
    declines: int = 0

    def count(self, what: str) -> None:
        self.sent[what] = self.sent.get(what, 0) + 1

    def summary(self) -> str:
        sent = ", ".join(f"{n} {k}" for k, n in self.sent.items()) or "nothing"
        return f"sent {sent}; got {self.offers} offers, {self.naks} NAKs; {self.declines} declines"


def _usable(addr: IPv4Address) -> bool:
    return not (
        addr.is_unspecified
        or addr.is_multicast
        or addr.is_loopback
        or addr == codec.BROADCAST
        or addr.is_reserved
    )


class DhcpClient:
    def __init__(
        self,
        ident: Identity,
        *,
        label: str,
        clock: Clock,
        timing: Timing,
        rng: random.Random | None = None,
    ) -> None:
        self.ident = ident
        self.label = label  # "<key>" for log lines
        self.clock = clock
        self.timing = timing
        self.rng = rng or random.SystemRandom()
        self._chaddr = codec.mac_bytes(ident.mac)
        self._client_id = _wire_identity(ident)
        self._started = 0.0
        self.last_stats = _Stats()
        self._refused: set[IPv4Address] = set()  # servers already logged as not allowed
        # The MAC an allowed server's replies must come from (pinned or learned), or None;
        # set by the LeaseManager. See servermacs.py.
        self.server_mac_for: Callable[[IPv4Address], str | None] = lambda _server: None
        self._spoofers: set[tuple[IPv4Address, str | None]] = set()  # logged once each

    # -- messages ------------------------------------------------------------------------

    def _xid(self) -> int:
        return self.rng.getrandbits(32)

    def _secs(self) -> int:
        return max(0, min(0xFFFF, int(self.clock.monotonic() - self._started)))

    def _message(
        self,
        mtype: MessageType,
        xid: int,
        *,
        ciaddr: IPv4Address = codec.ZERO,
        requested: IPv4Address | None = None,
        server_id: IPv4Address | None = None,
        full: bool = True,
        max_size: int = 1472,
    ) -> bytes:
        opts: dict[int, bytes] = {Opt.MESSAGE_TYPE: bytes((mtype,))}
        if requested is not None:
            opts[Opt.REQUESTED_IP] = requested.packed
        if server_id is not None:
            opts[Opt.SERVER_ID] = server_id.packed
        # Every message carries the same identity: servers key the lease by it, and Kea
        # (networkd too) refuses a RELEASE or DECLINE whose client id differs from the lease's.
        if self._client_id:
            opts[Opt.CLIENT_ID] = self._client_id
        if full:
            # DISCOVER and REQUEST carry what we ask for; DECLINE and RELEASE do not.
            if self.ident.hostname:
                opts[Opt.HOSTNAME] = self.ident.hostname.encode()
            opts[Opt.PARAM_REQUEST] = request_list(self.ident.extra_request)
            opts[Opt.MAX_MESSAGE_SIZE] = max(576, min(max_size, 0xFFFF)).to_bytes(2, "big")
            for code, value in self.ident.provide:
                if code not in CLIENT_OWNED and code != Opt.CLIENT_ID:
                    opts[code] = value
        return codec.encode(
            Message(
                op=BOOTREQUEST,
                xid=xid,
                chaddr=self._chaddr,
                secs=self._secs() if mtype in (MessageType.DISCOVER, MessageType.REQUEST) else 0,
                flags=codec.FLAG_BROADCAST
                if self.ident.broadcast_flag and ciaddr == codec.ZERO and full
                else 0,
                ciaddr=ciaddr,
                options=opts,
            )
        )

    # -- waiting -------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        base = min(self.timing.initial_retransmit * (2**attempt), self.timing.max_retransmit)
        return float(base * self.rng.uniform(1 - self.timing.jitter, 1 + self.timing.jitter))

    async def _await(
        self,
        tr: Transport,
        xid: int,
        types: tuple[MessageType, ...],
        until: float,
        *,
        also: tuple[int, ...] = (),
    ) -> tuple[Message, Received] | None:
        """The next acceptable reply before monotonic time ``until``; foreign packets skipped.
        ``also``: earlier xids of the same exchange whose (late) replies still count."""
        while True:
            remaining = until - self.clock.monotonic()
            if remaining <= 0:
                return None
            rx = await tr.recv(remaining)
            if rx is None:
                continue
            msg = _accept_any(rx.payload, (xid, *also), self._chaddr, types)
            if msg is None:
                log.debug("%s: ignoring a packet that is not a reply to xid %#x", self.label, xid)
                continue
            if not self._allowed(self._server_of(msg, rx)):
                continue
            if not self._from_pinned_mac(self._server_of(msg, rx), rx.src_mac):
                continue
            return msg, rx

    def _allowed(self, server: IPv4Address) -> bool:
        allow = self.ident.server_allow_list
        if not allow or server in allow:
            return True
        if server not in self._refused:
            self._refused.add(server)
            log.warning(
                "%s: ignoring DHCP replies from %s: not in ipam.serverAllowList (%s)",
                self.label,
                server,
                ", ".join(map(str, allow)),
            )
        return False

    def _from_pinned_mac(self, server: IPv4Address, src_mac: str | None) -> bool:
        """An allowed server's reply must come from its pinned or learned MAC: option 54 is
        just bytes any LAN host can write."""
        if not self.ident.server_allow_list:
            return True
        expected = self.server_mac_for(server)
        if expected is None or (src_mac is not None and src_mac.lower() == expected.lower()):
            return True
        if (server, src_mac) not in self._spoofers:
            self._spoofers.add((server, src_mac))
            log.warning(
                "%s: ignoring DHCP replies claiming server id %s from MAC %s: that server's "
                "replies come from %s (ipam.serverAllowList; a server whose MAC really "
                "changed needs its entry removed from dhcp-servers.json in the state dir, or "
                'an "ip@mac" pin)',
                self.label,
                server,
                src_mac or "unknown",
                expected,
            )
        return False

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
        deadline = self._started + timeout
        stats = self.last_stats = _Stats()
        ex = _Exchange()
        try:
            bound = await self._obtain(tr, deadline, stats, ex, prefer)
        except BaseException:
            # Timeout, NAKs or cancellation: whatever a server acknowledged (or may have
            # committed to a REQUEST whose ACK is late) goes back instead of leaking.
            await self._release_held(tr, ex, keep=None)
            raise
        await self._release_held(tr, ex, keep=(bound.info.address.ip, bound.info.server_id))
        return bound

    async def _obtain(
        self,
        tr: Transport,
        deadline: float,
        stats: _Stats,
        ex: _Exchange,
        prefer: IPv4Address | None,
    ) -> Bound:
        max_size = _max_size(tr)
        declines = 0
        while self.clock.monotonic() < deadline:
            result = await self._init_select_request(tr, deadline, stats, prefer, max_size, ex)
            if isinstance(result, Bound):
                return result
            if isinstance(result, Nak):
                stats.naks += 1
                log.info(
                    "%s: NAK from %s (%s), restarting INIT",
                    self.label,
                    result.server,
                    result.message,
                )
                if stats.naks >= self.timing.max_naks:
                    raise DhcpNaked(
                        f"NAKed {stats.naks} times, last by {result.server}: {result.message}"
                    )
                prefer = None
                pause = min(self.timing.nak_pause * 2 ** (stats.naks - 1), 1.0)
                pause *= self.rng.uniform(0.5, 1.5)
                await self.clock.sleep(min(pause, max(0.0, deadline - self.clock.monotonic())))
                continue
            if isinstance(result, IPv4Address):  # declined
                stats.declines += 1
                declines += 1
                if prefer == result:
                    prefer = None
                pause = min(self.timing.decline_pause * (2 ** (declines - 1)), 5.0)
                await self.clock.sleep(min(pause, max(0.0, deadline - self.clock.monotonic())))
        raise DhcpTimeout(stats.summary())

    async def reboot(
        self, tr: Transport, address: IPv4Address, timeout: float
    ) -> Bound | Nak | None:
        """INIT-REBOOT alone: ask for ``address`` again (after an agent restart)."""
        self._started = self.clock.monotonic()
        self.last_stats = _Stats()
        return await self._init_reboot(
            tr, address, self._started + timeout, self.last_stats, _max_size(tr)
        )

    async def _init_reboot(
        self, tr: Transport, address: IPv4Address, deadline: float, stats: _Stats, max_size: int
    ) -> Bound | Nak | None:
        xid = self._xid()
        sent_at = self.clock.time()
        log.info("%s: INIT-REBOOT requesting %s", self.label, address)
        for attempt in range(self.timing.reboot_attempts):
            now = self.clock.monotonic()
            if now >= deadline:
                break
            await tr.send_broadcast(
                self._message(MessageType.REQUEST, xid, requested=address, max_size=max_size)
            )
            stats.count("REQUEST")
            until = min(deadline, now + self._backoff(attempt))
            got = await self._await(tr, xid, (MessageType.ACK, MessageType.NAK), until)
            if got is None:
                continue
            msg, rx = got
            if msg.message_type == MessageType.NAK:
                nak = Nak(self._server_of(msg, rx), _nak_text(msg))
                log.info("%s: INIT-REBOOT NAKed by %s (%s)", self.label, nak.server, nak.message)
                return nak
            if not _usable(msg.yiaddr):
                continue
            return Bound(ack_info(msg, rx.src_ip), rx.src_mac, sent_at)
        return None

    def _server_of(self, msg: Message, rx: Received) -> IPv4Address:
        raw = msg.options.get(Opt.SERVER_ID)
        if raw is not None and len(raw) == 4:
            return IPv4Address(raw)
        return rx.src_ip

    async def _release_held(
        self, tr: Transport, ex: _Exchange, keep: tuple[IPv4Address, IPv4Address] | None
    ) -> None:
        """DHCPRELEASE every address this exchange may hold at a server, but ``keep``."""
        for (address, server), server_mac in list(ex.held.items()):
            if (address, server) == keep:
                continue
            log.info(
                "%s: releasing %s at %s: %s in this exchange but not kept",
                self.label,
                address,
                server,
                "acknowledged" if (address, server) in ex.acked else "requested",
            )
            payload = self._message(
                MessageType.RELEASE, self._xid(), ciaddr=address, server_id=server, full=False
            )
            with contextlib.suppress(OSError):
                await tr.send_unicast(payload, src=address, dst=server, dst_mac=server_mac)
            self.last_stats.count("RELEASE")
        ex.held.clear()

    def _late_ack(self, ex: _Exchange, msg: Message, rx: Received) -> bool:
        """An ACK to a REQUEST of an earlier pass, from the server that REQUEST named."""
        asked = ex.requested.get(msg.xid)
        return (
            msg.message_type == MessageType.ACK
            and asked is not None
            and self._server_of(msg, rx) == asked.server
            and _usable(msg.yiaddr)
        )

    async def _init_select_request(
        self,
        tr: Transport,
        deadline: float,
        stats: _Stats,
        prefer: IPv4Address | None,
        max_size: int,
        ex: _Exchange,
    ) -> Bound | Nak | IPv4Address | None:
        """One INIT -> SELECTING -> REQUESTING pass. Returns a Bound, a Nak, the address we
        declined, or None when the deadline passed or REQUESTING got no answer.

        A slow server (udhcpd ARP-pings each new address for ~2 s, one packet at a time)
        may answer after we retransmitted and moved on: OFFERs and ACKs to earlier xids of
        this exchange still count, until the caller's deadline."""
        xid = self._xid()
        earlier = tuple(ex.xids)
        ex.xids.append(xid)
        offer: tuple[Message, Received] | None = None
        attempt = 0
        while offer is None:
            now = self.clock.monotonic()
            if now >= deadline:
                return None
            await tr.send_broadcast(
                self._message(MessageType.DISCOVER, xid, requested=prefer, max_size=max_size)
            )
            stats.count("DISCOVER")
            until = min(deadline, now + self._backoff(attempt))
            attempt += 1
            while True:
                got = await self._await(
                    tr, xid, (MessageType.OFFER, MessageType.ACK), until, also=earlier
                )
                if got is None:
                    break
                msg, rx = got
                if msg.message_type == MessageType.ACK:
                    if self._late_ack(ex, msg, rx):
                        asked = ex.requested[msg.xid]
                        log.info("%s: late ACK to xid %#x taken", self.label, msg.xid)
                        return await self._bound_or_declined(
                            tr, ex, stats, got, asked.server, asked.sent_at, None
                        )
                    continue
                if _usable(msg.yiaddr) and _usable(self._server_of(msg, rx)):
                    offer = got
                    break
        msg, rx = offer
        stats.offers += 1
        offered = msg.yiaddr
        server = self._server_of(msg, rx)
        log.debug("%s: OFFER %s from %s", self.label, offered, server)

        # The probe runs while REQUEST/ACK is in flight; its verdict is needed only after ACK.
        probe = asyncio.ensure_future(
            tr.arp_probe(offered, self.timing.arp_probe_wait, self.timing.arp_probes)
        )
        try:
            sent_at = self.clock.time()
            ex.requested[xid] = _Asked(server, offered, sent_at)
            ex.held[(offered, server)] = rx.src_mac
            ack: tuple[Message, Received] | None = None
            for attempt in range(self.timing.request_attempts):
                now = self.clock.monotonic()
                if now >= deadline:
                    return None
                await tr.send_broadcast(
                    self._message(
                        MessageType.REQUEST,
                        xid,
                        requested=offered,
                        server_id=server,
                        max_size=max_size,
                    )
                )
                stats.count("REQUEST")
                until = min(deadline, now + self._backoff(attempt))
                while True:
                    got = await self._await(
                        tr,
                        xid,
                        (MessageType.ACK, MessageType.NAK),
                        until,
                        also=tuple(x for x in ex.requested if x != xid),
                    )
                    if got is None:
                        break
                    if got[0].xid != xid:
                        if self._late_ack(ex, *got):
                            ack = got
                            break
                        continue  # a stale NAK, or not from the server that REQUEST named
                    reply_server = self._server_of(*got)
                    if reply_server != server:
                        continue  # another server's answer to our broadcast REQUEST
                    ack = got
                    break
                if ack is not None:
                    break
            if ack is None:
                log.info("%s: no ACK from %s for %s; back to INIT", self.label, server, offered)
                return None
            msg, rx = ack
            if msg.message_type == MessageType.NAK:
                ex.held.pop((offered, server), None)
                return Nak(server, _nak_text(msg))
            if not _usable(msg.yiaddr):
                return None
            asked = ex.requested[msg.xid]
            return await self._bound_or_declined(
                tr, ex, stats, ack, asked.server, asked.sent_at, (offered, probe)
            )
        finally:
            if not probe.done():
                probe.cancel()
                await asyncio.gather(probe, return_exceptions=True)

    async def _bound_or_declined(
        self,
        tr: Transport,
        ex: _Exchange,
        stats: _Stats,
        ack: tuple[Message, Received],
        server: IPv4Address,
        sent_at: float,
        running: tuple[IPv4Address, asyncio.Future[bool]] | None,
    ) -> Bound | IPv4Address:
        """After an ACK: the ARP probe's verdict (``running``: the probe already started for
        the offered address), then Bound, or DECLINE and the declined address."""
        msg, rx = ack
        info = ack_info(msg, server)
        asked = ex.requested.get(msg.xid)
        if asked is not None and asked.address != info.address.ip:
            ex.held.pop((asked.address, server), None)  # the server gave another address
        ex.held[(info.address.ip, server)] = rx.src_mac
        ex.acked.add((info.address.ip, server))
        log.debug("%s: ACK %s from %s", self.label, info.address, server)
        probe: asyncio.Future[bool] | None = None
        try:
            if running is not None and running[0] == info.address.ip:
                probe = running[1]
            else:
                probe = asyncio.ensure_future(
                    tr.arp_probe(
                        info.address.ip, self.timing.arp_probe_wait, self.timing.arp_probes
                    )
                )
            in_use = await probe
            log.debug(
                "%s: ARP probe of %s: %s",
                self.label,
                info.address.ip,
                "in use" if in_use else "free",
            )
            if in_use:
                log.warning(
                    "%s: %s offered by %s is in use on the link (ARP); sending DECLINE",
                    self.label,
                    info.address.ip,
                    server,
                )
                await tr.send_broadcast(
                    self._message(
                        MessageType.DECLINE,
                        msg.xid,
                        requested=info.address.ip,
                        server_id=info.server_id,
                        full=False,
                    )
                )
                stats.count("DECLINE")
                ex.held.pop((info.address.ip, server), None)  # DECLINE gave it back
                return info.address.ip
            return Bound(info, rx.src_mac, sent_at)
        finally:
            if probe is not None and not probe.done():
                probe.cancel()
                await asyncio.gather(probe, return_exceptions=True)

    # -- bound ---------------------------------------------------------------------------

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
        payload = self._message(MessageType.REQUEST, xid, ciaddr=address, max_size=_max_size(tr))
        sent_at = self.clock.time()
        if rebinding:
            await tr.send_broadcast(payload, src=address)
        else:
            await tr.send_unicast(payload, src=address, dst=server_id, dst_mac=server_mac)
        got = await self._await(tr, xid, (MessageType.ACK, MessageType.NAK), until)
        if got is None:
            return None
        msg, rx = got
        server = self._server_of(msg, rx)
        if not rebinding and server != server_id:
            log.debug("%s: ignoring a renew reply from %s, not our server", self.label, server)
            return None
        if msg.message_type == MessageType.NAK:
            return Nak(server, _nak_text(msg))
        if not _usable(msg.yiaddr):
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
            MessageType.RELEASE, self._xid(), ciaddr=address, server_id=server_id, full=False
        )
        await tr.send_unicast(payload, src=address, dst=server_id, dst_mac=server_mac)

    async def decline(self, tr: Transport, *, address: IPv4Address, server_id: IPv4Address) -> None:
        """DHCPDECLINE of ``address`` (found in use on the link), broadcast from 0.0.0.0."""
        payload = self._message(
            MessageType.DECLINE, self._xid(), requested=address, server_id=server_id, full=False
        )
        await tr.send_broadcast(payload)
        self.last_stats.count("DECLINE")

    def new_xid(self) -> int:
        return self._xid()


def _wire_identity(ident: Identity) -> bytes:
    """Option 61 of all our messages: an ipam.provide'd one wins over ours (b"": none)."""
    provided = [value for code, value in ident.provide if code == Opt.CLIENT_ID]
    return provided[-1] if provided else ident.client_id


@dataclass(frozen=True)
class _Asked:
    server: IPv4Address
    address: IPv4Address
    sent_at: float  # wall time of the first REQUEST with this xid


@dataclass
class _Exchange:
    """One obtain(): its xids, what each REQUEST asked of whom, and which addresses a server
    may hold for us (REQUESTed or ACKed, neither NAKed nor declined) with the server's MAC."""

    xids: list[int] = field(default_factory=list)
    requested: dict[int, _Asked] = field(default_factory=dict)
    held: dict[tuple[IPv4Address, IPv4Address], str | None] = field(default_factory=dict)
    acked: set[tuple[IPv4Address, IPv4Address]] = field(default_factory=set)


def _accept_any(
    data: bytes, xids: tuple[int, ...], chaddr: bytes, types: tuple[MessageType, ...]
) -> Message | None:
    for xid in xids:
        msg = codec.accept_reply(data, xid=xid, chaddr=chaddr, types=types)
        if msg is not None:
            return msg
    return None


def _max_size(tr: Transport) -> int:
    # Largest reply that fits the interface without fragmentation (which our filter drops).
    return max(576, tr.mtu - 28)


def _nak_text(msg: Message) -> str:
    raw = msg.options.get(Opt.MESSAGE)
    if not raw:
        return "no message"
    return raw.decode("utf-8", errors="replace").strip("\0 ")[:200] or "no message"
