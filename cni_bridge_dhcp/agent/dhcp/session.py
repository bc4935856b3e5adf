"""What every exchange of one pod's client shares: its identity and timing, sending
requests, and waiting for the replies that pass the checks (our xid and MAC, an allowed
server, from that server's known MAC).

Retransmission: RFC 2131 4.1 suggests 4 s, 8 s, ... (±1 s), made for slow shared media; on
a veth into a bridge a lost first DISCOVER would then cost 4 s. We start at ~0.3 s and
double, with ±25 % jitter so many pods created together do not retransmit in lockstep,
capped at 4 s, inside the caller's total timeout.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from . import codec
from .clock import Clock
from .codec import Message, MessageType
from .lease import AckInfo
from .messages import Identity, accept_any, build_request, server_of
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
class Bound:
    info: AckInfo
    server_mac: str | None
    sent_at: float  # wall time of the first REQUEST of the exchange: lease times count from it


@dataclass(frozen=True)
class Nak:
    server: IPv4Address
    message: str


@dataclass
class Stats:
    sent: dict[str, int] = field(default_factory=dict)
    offers: int = 0
    naks: int = 0
    declines: int = 0

    def count(self, what: str) -> None:
        self.sent[what] = self.sent.get(what, 0) + 1

    def summary(self) -> str:
        sent = ", ".join(f"{n} {k}" for k, n in self.sent.items()) or "nothing"
        return f"sent {sent}; got {self.offers} offers, {self.naks} NAKs; {self.declines} declines"


class ClientSession:
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
        self._started = 0.0
        self.last_stats = Stats()
        self._refused: set[IPv4Address] = set()  # servers already logged as not allowed
        # The MAC an allowed server's replies must come from (pinned or learned), or None;
        # set by the LeaseManager. See servermacs.py.
        self.server_mac_for: Callable[[IPv4Address], str | None] = lambda _server: None
        self._spoofers: set[tuple[IPv4Address, str | None]] = set()  # logged once each

    def new_xid(self) -> int:
        return self.rng.getrandbits(32)

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
        # secs: time since this exchange started (RFC 2131 4.1), for DISCOVER and REQUEST
        secs = max(0, min(0xFFFF, int(self.clock.monotonic() - self._started)))
        return build_request(
            self.ident,
            mtype,
            xid,
            secs=secs,
            ciaddr=ciaddr,
            requested=requested,
            server_id=server_id,
            full=full,
            max_size=max_size,
        )

    def backoff(self, attempt: int) -> float:
        base = min(self.timing.initial_retransmit * (2**attempt), self.timing.max_retransmit)
        return float(base * self.rng.uniform(1 - self.timing.jitter, 1 + self.timing.jitter))

    async def wait_reply(
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
            msg = accept_any(rx.payload, (xid, *also), self._chaddr, types)
            if msg is None:
                log.debug("%s: ignoring a packet that is not a reply to xid %#x", self.label, xid)
                continue
            if not self._allowed(server_of(msg, rx)):
                continue
            if not self._from_pinned_mac(server_of(msg, rx), rx.src_mac):
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
