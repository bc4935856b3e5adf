"""The DHCPv6 client's exchanges (RFC 8415 18.2) on an injectable transport and clock:
SOLICIT/ADVERTISE then REQUEST/REPLY, RENEW, REBIND and RELEASE, each with the RFC's
retransmission (15: RT doubles from IRT with +-10 % jitter up to MRT, bounded by MRC
retransmissions and MRD seconds, whichever ends first).

Replies are matched by transaction id and our DUID; a REPLY must come from the server the
exchange addressed (REQUEST, RENEW, RELEASE). Malformed packets are ignored.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import TypeVar

from ..clock import Clock
from . import codec
from .codec import IaAddress, IaNa, Message6, Status
from .transport import Transport6

log = logging.getLogger(__name__)

T = TypeVar("T")

# Options the client asks for (ORO): DNS recursive name servers and search list (RFC 3646).
ORO = (codec.OPT_DNS_SERVERS, codec.OPT_DOMAIN_LIST)


@dataclass(frozen=True)
class Timing6:
    """RFC 8415 7.6 constants (seconds / counts)."""

    sol_timeout: float = 1.0
    sol_max_rt: float = 3600.0
    req_timeout: float = 1.0
    req_max_rt: float = 30.0
    req_max_rc: int = 10
    ren_timeout: float = 10.0
    ren_max_rt: float = 600.0
    reb_timeout: float = 10.0
    reb_max_rt: float = 600.0
    rel_timeout: float = 1.0
    rel_max_rc: int = 4
    # DEL waits at most this long for the RELEASE's REPLY (the RFC's 4 retransmissions
    # would hold a DEL for 15 s when the server is gone; the lease then expires there).
    release_wait: float = 3.0


class Dhcp6Timeout(Exception):
    """No usable answer within the exchange's bound."""


class Dhcp6Refused(Exception):
    """The server answered with a failure status (e.g. NoAddrsAvail)."""


@dataclass(frozen=True)
class Identity6:
    duid: bytes
    iaid: int


@dataclass(frozen=True)
class Bound6:
    server_id: bytes
    server: IPv6Address  # the link-local source of the REPLY
    address: IPv6Address
    preferred: int
    valid: int
    t1: int
    t2: int
    dns_servers: tuple[IPv6Address, ...]
    domains: tuple[str, ...]
    sent_at: float  # wall clock when the exchange began: lifetimes count from it


@dataclass(frozen=True)
class Lost6:
    """The server says the binding is gone (NoBinding, or our address with lifetime 0)."""

    why: str


def _status_text(status: Status | None) -> str:
    if status is None:
        return "no status"
    return f"status {status.code} {status.message!r}"


class Dhcp6Client:
    def __init__(
        self,
        identity: Identity6,
        *,
        clock: Clock,
        timing: Timing6 | None = None,
        rng: random.Random | None = None,
        label: str = "",
    ) -> None:
        self.identity = identity
        self.clock = clock
        self.timing = timing or Timing6()
        self.rng = rng or random.SystemRandom()
        self.label = label

    # -- the messages ----------------------------------------------------------------------

    def _ia(self, address: IPv6Address | None = None) -> IaNa:
        addresses = (IaAddress(address, 0, 0),) if address is not None else ()
        return IaNa(self.identity.iaid, 0, 0, addresses)

    def _message(
        self,
        msg_type: int,
        xid: int,
        elapsed: int,
        *,
        server_id: bytes | None = None,
        address: IPv6Address | None = None,
        oro: bool = True,
    ) -> bytes:
        return codec.encode(
            Message6(
                msg_type,
                xid,
                client_id=self.identity.duid,
                server_id=server_id,
                ia_na=(self._ia(address),),
                oro=ORO if oro else (),
                elapsed=elapsed,
            )
        )

    def _ours(self, msg: Message6, xid: int, want: int) -> bool:
        return msg.msg_type == want and msg.xid == xid and msg.client_id == self.identity.duid

    def _our_ia(self, msg: Message6) -> IaNa | None:
        return next((ia for ia in msg.ia_na if ia.iaid == self.identity.iaid), None)

    # -- retransmission (RFC 8415 15) ------------------------------------------------------

    def _jitter(self, first_solicit: bool = False) -> float:
        # the first SOLICIT's RAND is strictly positive (RFC 8415 15)
        return self.rng.uniform(0.0, 0.1) if first_solicit else self.rng.uniform(-0.1, 0.1)

    async def _exchange(
        self,
        tr: Transport6,
        build: Callable[[int], bytes],
        accept: Callable[[Message6, IPv6Address], T | None],
        *,
        irt: float,
        mrt: float,
        mrc: int,
        mrd: float,
        first_solicit: bool = False,
        collect: Callable[[list[T]], T | None] | None = None,
    ) -> T | None:
        """Send ``build(elapsed)``, retransmit, return the first answer ``accept`` takes
        (or, with ``collect``, what it picks of those received in the first RT)."""
        start = self.clock.monotonic()
        deadline = start + mrd
        rt = irt + self._jitter(first_solicit) * irt
        sent = 0
        gathered: list[T] = []
        while True:
            elapsed = int((self.clock.monotonic() - start) * 100)
            await tr.send(build(elapsed))
            sent += 1
            round_end = min(self.clock.monotonic() + rt, deadline)
            while True:
                remaining = round_end - self.clock.monotonic()
                if remaining <= 0:
                    break
                got = await tr.recv(remaining)
                if got is None:
                    break
                data, source = got
                try:
                    msg = codec.decode(data)
                except codec.Malformed as exc:
                    log.debug(
                        "%s: ignoring malformed DHCPv6 packet from %s: %s", self.label, source, exc
                    )
                    continue
                answer = accept(msg, source)
                if answer is None:
                    continue
                if collect is None or sent > 1:
                    return answer
                gathered.append(answer)
                if msg.preference == 255:
                    return answer
            if gathered and collect is not None:
                return collect(gathered)
            if self.clock.monotonic() >= deadline or (mrc and sent > mrc):
                return None
            rt = 2 * rt + self._jitter() * rt
            if mrt and rt > mrt:
                rt = mrt + self._jitter() * mrt

    # -- exchanges -------------------------------------------------------------------------

    def _bound(self, msg: Message6, source: IPv6Address, sent_at: float) -> Bound6 | None:
        ia = self._our_ia(msg)
        if ia is None or msg.server_id is None:
            return None
        if ia.status is not None and ia.status.code != codec.SUCCESS:
            return None
        usable = [
            a
            for a in ia.addresses
            if a.valid > 0 and (a.status is None or a.status.code == codec.SUCCESS)
        ]
        if not usable:
            return None
        addr = usable[0]
        return Bound6(
            server_id=msg.server_id,
            server=source,
            address=addr.address,
            preferred=min(addr.preferred, addr.valid),
            valid=addr.valid,
            t1=ia.t1,
            t2=ia.t2,
            dns_servers=msg.dns_servers,
            domains=msg.domains,
            sent_at=sent_at,
        )

    async def _solicit(
        self,
        tr: Transport6,
        mrd: float,
        prefer: IPv6Address | None,
        refusals: list[str],
    ) -> Message6 | None:
        """SOLICIT until an ADVERTISE with an address comes (the best of the first RT)."""
        t = self.timing
        xid = self.rng.getrandbits(24)

        def advertised(msg: Message6, source: IPv6Address) -> tuple[int, Message6] | None:
            if not self._ours(msg, xid, codec.ADVERTISE) or msg.server_id is None:
                return None
            if self._bound(msg, source, 0.0) is None:
                # RFC 8415 18.2.9: an Advertise without addresses is not taken
                ia = self._our_ia(msg)
                refusals.append(_status_text(msg.status or (ia.status if ia else None)))
                return None
            return (msg.preference or 0, msg)

        def best(offers: list[tuple[int, Message6]]) -> tuple[int, Message6] | None:
            return max(offers, key=lambda o: o[0])

        offer = await self._exchange(
            tr,
            lambda elapsed: self._message(codec.SOLICIT, xid, elapsed, address=prefer),
            advertised,
            irt=t.sol_timeout,
            mrt=t.sol_max_rt,
            mrc=0,
            mrd=mrd,
            first_solicit=True,
            collect=best,
        )
        return None if offer is None else offer[1]

    async def obtain(
        self, tr: Transport6, timeout: float, prefer: IPv6Address | None = None
    ) -> Bound6:
        """SOLICIT/ADVERTISE then REQUEST/REPLY, all within ``timeout`` seconds."""
        deadline = self.clock.monotonic() + timeout
        refusals: list[str] = []
        while True:
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                break
            offer = await self._solicit(tr, remaining, prefer, refusals)
            if offer is None:
                break
            advert = offer
            ia = self._our_ia(advert)
            assert ia is not None and advert.server_id is not None
            server_id = advert.server_id
            address = next(a.address for a in ia.addresses if a.valid > 0)
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                break
            bound = await self._request(tr, codec.REQUEST, server_id, address, remaining)
            if isinstance(bound, Bound6):
                return bound
            if bound is not None:
                refusals.append(bound.why)
            # no REPLY, or a refusal: start over with SOLICIT while time is left
        detail = f"; answers: {', '.join(refusals[-3:])}" if refusals else ""
        raise Dhcp6Timeout(f"no DHCPv6 lease within {timeout:g}s{detail}")

    async def _request(
        self,
        tr: Transport6,
        msg_type: int,
        server_id: bytes | None,
        address: IPv6Address,
        mrd: float,
    ) -> Bound6 | Lost6 | None:
        t = self.timing
        xid = self.rng.getrandbits(24)
        sent_at = self.clock.time()
        irt, mrt, mrc = {
            codec.REQUEST: (t.req_timeout, t.req_max_rt, t.req_max_rc),
            codec.RENEW: (t.ren_timeout, t.ren_max_rt, 0),
            codec.REBIND: (t.reb_timeout, t.reb_max_rt, 0),
        }[msg_type]

        def replied(msg: Message6, source: IPv6Address) -> Bound6 | Lost6 | None:
            if not self._ours(msg, xid, codec.REPLY):
                return None
            if server_id is not None and msg.server_id != server_id:
                return None
            bound = self._bound(msg, source, sent_at)
            if bound is not None and bound.address == address:
                return bound
            ia = self._our_ia(msg)
            status = msg.status or (ia.status if ia else None)
            if ia is not None and any(a.address == address and a.valid == 0 for a in ia.addresses):
                return Lost6(f"the server ended {address} (valid lifetime 0)")
            if bound is not None:
                return bound  # another address than asked for: take what the server gives
            return Lost6(f"{codec.MESSAGE_NAMES[msg_type]} refused: {_status_text(status)}")

        return await self._exchange(
            tr,
            lambda elapsed: self._message(
                msg_type, xid, elapsed, server_id=server_id, address=address
            ),
            replied,
            irt=irt,
            mrt=mrt,
            mrc=mrc,
            mrd=mrd,
        )

    async def renew(
        self, tr: Transport6, server_id: bytes, address: IPv6Address, until: float
    ) -> Bound6 | Lost6 | None:
        """RENEW to the server that gave the lease, for ``until`` seconds at most."""
        return await self._request(tr, codec.RENEW, server_id, address, until)

    async def rebind(
        self, tr: Transport6, address: IPv6Address, until: float
    ) -> Bound6 | Lost6 | None:
        """REBIND to any server, for ``until`` seconds at most."""
        return await self._request(tr, codec.REBIND, None, address, until)

    async def release(self, tr: Transport6, server_id: bytes, address: IPv6Address) -> bool:
        """RELEASE; True when the server acknowledged it (any REPLY: RFC 8415 18.2.7)."""
        t = self.timing
        xid = self.rng.getrandbits(24)

        def replied(msg: Message6, source: IPv6Address) -> bool | None:
            return (
                True if self._ours(msg, xid, codec.REPLY) and msg.server_id == server_id else None
            )

        answer = await self._exchange(
            tr,
            lambda elapsed: self._message(
                codec.RELEASE, xid, elapsed, server_id=server_id, address=address, oro=False
            ),
            replied,
            irt=t.rel_timeout,
            mrt=0,
            mrc=t.rel_max_rc,
            mrd=t.release_wait,
        )
        return bool(answer)
