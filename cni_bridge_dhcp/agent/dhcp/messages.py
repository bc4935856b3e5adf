"""The client's messages: who it says it is (``Identity``), how each request is built, and
the small readings of a reply every exchange needs (who sent it, is the address usable)."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from . import codec
from .codec import BOOTREQUEST, Message, MessageType, Opt
from .lease import CLIENT_OWNED, request_list
from .transport import Received, Transport


@dataclass(frozen=True)
class Identity:
    mac: str
    client_id: bytes
    hostname: str | None
    extra_request: tuple[int, ...] = ()
    provide: tuple[tuple[int, bytes], ...] = ()
    broadcast_flag: bool = False
    server_allow_list: tuple[IPv4Address, ...] = ()  # empty: any server


def wire_identity(ident: Identity) -> bytes:
    """Option 61 of all our messages: an ipam.provide'd one wins over ours (b"": none)."""
    provided = [value for code, value in ident.provide if code == Opt.CLIENT_ID]
    return provided[-1] if provided else ident.client_id


def build_request(
    ident: Identity,
    mtype: MessageType,
    xid: int,
    *,
    secs: int,
    ciaddr: IPv4Address = codec.ZERO,
    requested: IPv4Address | None = None,
    server_id: IPv4Address | None = None,
    full: bool = True,
    max_size: int = 1472,
) -> bytes:
    """One client message. ``full``: DISCOVER and REQUEST carry what we ask for (hostname,
    parameter list, ipam.provide); DECLINE and RELEASE do not."""
    opts: dict[int, bytes] = {Opt.MESSAGE_TYPE: bytes((mtype,))}
    if requested is not None:
        opts[Opt.REQUESTED_IP] = requested.packed
    if server_id is not None:
        opts[Opt.SERVER_ID] = server_id.packed
    # Every message carries the same identity: servers key the lease by it, and Kea
    # (networkd too) refuses a RELEASE or DECLINE whose client id differs from the lease's.
    client_id = wire_identity(ident)
    if client_id:
        opts[Opt.CLIENT_ID] = client_id
    if full:
        if ident.hostname:
            opts[Opt.HOSTNAME] = ident.hostname.encode()
        opts[Opt.PARAM_REQUEST] = request_list(ident.extra_request)
        opts[Opt.MAX_MESSAGE_SIZE] = max(576, min(max_size, 0xFFFF)).to_bytes(2, "big")
        for code, value in ident.provide:
            if code not in CLIENT_OWNED and code != Opt.CLIENT_ID:
                opts[code] = value
    return codec.encode(
        Message(
            op=BOOTREQUEST,
            xid=xid,
            chaddr=codec.mac_bytes(ident.mac),
            secs=secs if mtype in (MessageType.DISCOVER, MessageType.REQUEST) else 0,
            flags=codec.FLAG_BROADCAST
            if ident.broadcast_flag and ciaddr == codec.ZERO and full
            else 0,
            ciaddr=ciaddr,
            options=opts,
        )
    )


def usable(addr: IPv4Address) -> bool:
    return not (
        addr.is_unspecified
        or addr.is_multicast
        or addr.is_loopback
        or addr == codec.BROADCAST
        or addr.is_reserved
    )


def server_of(msg: Message, rx: Received) -> IPv4Address:
    """The server a reply speaks for: its option 54, else the packet's source."""
    raw = msg.options.get(Opt.SERVER_ID)
    if raw is not None and len(raw) == 4:
        return IPv4Address(raw)
    return rx.src_ip


def accept_any(
    data: bytes, xids: tuple[int, ...], chaddr: bytes, types: tuple[MessageType, ...]
) -> Message | None:
    for xid in xids:
        msg = codec.accept_reply(data, xid=xid, chaddr=chaddr, types=types)
        if msg is not None:
            return msg
    return None


def max_size(tr: Transport) -> int:
    # Largest reply that fits the interface without fragmentation (which our filter drops).
    return max(576, tr.mtu - 28)


def nak_text(msg: Message) -> str:
    raw = msg.options.get(Opt.MESSAGE)
    if not raw:
        return "no message"
    return raw.decode("utf-8", errors="replace").strip("\0 ")[:200] or "no message"
