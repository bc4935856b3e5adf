"""A deliberately misbehaving DHCP server for the reliability layer.

Real servers (dnsmasq, ISC dhcpd) are used wherever they can show a fault; this one covers
what they will not do: omit or garble T1/T2, hand out a different address at renewal,
NAK every renewal, act as a rogue server, or precede every reply with a burst of
malformed packets. It runs inside the sandbox's ``lan`` namespace only
(``ip netns exec <lan> python -m testbed.fakedhcp CONFIG.json``), receives on
an AF_PACKET socket bound to ``lan0`` and sends hand-built IPv4/UDP packets, so malformed
IP and UDP headers can be sent too. Every request and reply is logged as a JSON line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from cni_bridge_dhcp.agent.dhcp import codec
from cni_bridge_dhcp.agent.dhcp.codec import BOOTREPLY, DecodeError, Message, MessageType, Opt

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4


@dataclass
class Behaviour:
    """What the server does; loaded from the JSON config file."""

    interface: str = "lan0"
    server_ip: str = "192.168.77.1"
    pool: tuple[str, str] = ("192.168.77.150", "192.168.77.169")
    lease_time: int = 30
    # "rfc": T1/T2 sent as 0.5/0.875 of the lease; "omit": options 58/59 left out;
    # "bogus": T1 beyond the lease and T2 zero (a client must fall back to the defaults).
    timers: str = "rfc"
    router: str = "192.168.77.1"
    dns: str = "192.168.77.1"
    nak_renewals: bool = False  # every REQUEST with ciaddr set gets a NAK
    new_address_at_renewal: bool = False  # renewals are ACKed with the next free address
    nak_foreign_requests: bool = False  # rogue: NAK every REQUEST meant for another server
    malformed_before_reply: bool = False  # a burst of malformed replies ahead of each reply
    extra_options: dict[str, str] = field(default_factory=dict)  # code -> hex, in ACK/OFFER
    log: str = "fakedhcp.jsonl"

    @classmethod
    def load(cls, path: str) -> Behaviour:
        raw: dict[str, Any] = json.loads(Path(path).read_text())
        if "pool" in raw:
            raw["pool"] = tuple(raw["pool"])
        return cls(**raw)


@dataclass
class Pool:
    first: int
    last: int
    bindings: dict[bytes, IPv4Address] = field(default_factory=dict)
    declined: set[IPv4Address] = field(default_factory=set)  # never handed out again

    def taken(self) -> set[IPv4Address]:
        return set(self.bindings.values()) | self.declined

    def for_client(self, cid: bytes, *, fresh: bool = False) -> IPv4Address:
        current = self.bindings.get(cid)
        if current is not None and not fresh:
            return current
        taken = self.taken()
        start = int(current) + 1 if current is not None else self.first
        span = self.last - self.first + 1
        for i in range(span):
            cand = IPv4Address(self.first + (start - self.first + i) % span)
            if cand not in taken:
                self.bindings[cid] = cand
                return cand
        raise RuntimeError("pool exhausted")

    def release(self, cid: bytes) -> None:
        self.bindings.pop(cid, None)


def _ip_header(
    total: int, src: IPv4Address, dst: IPv4Address, *, flags_frag: int = 0, version: int = 4
) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        (version << 4) | 5,
        0,
        total,
        0x1234,
        flags_frag,
        64,
        17,
        0,
        src.packed,
        dst.packed,
    )
    return header[:10] + struct.pack("!H", codec._checksum(header)) + header[12:]


def malformed_variants(good: bytes, src: IPv4Address, dst: IPv4Address) -> list[tuple[str, bytes]]:
    """(name, IPv4 packet) pairs: each must be dropped whole by a correct client.

    ``good`` is the DHCP payload of the real reply that follows; variants are built from it
    (same xid and chaddr, so only the malformation makes them unacceptable) or, for the
    foreign ones, differ from it in exactly one identifying field.
    """
    hdr = good[:236]
    cookie = codec.MAGIC
    mtype = good[236 + 4 + 2] if len(good) > 242 else MessageType.ACK

    def udp(payload: bytes, *, udp_len: int | None = None) -> bytes:
        length = 8 + len(payload) if udp_len is None else udp_len
        return struct.pack("!HHHH", 67, 68, length, 0) + payload

    def ip(payload: bytes) -> bytes:
        return codec.build_ip_udp(payload, src=src, dst=dst, sport=67, dport=68)

    def set_byte(data: bytes, pos: int, value: int) -> bytes:
        return data[:pos] + bytes((value,)) + data[pos + 1 :]

    def with_opts(*opts: bytes, header: bytes = hdr) -> bytes:
        body = header + cookie + b"".join(opts)
        return body + bytes(max(0, 300 - len(body)))

    mt = bytes((53, 1, mtype))
    sid = bytes((54, 4)) + src.packed
    out: list[tuple[str, bytes]] = [
        ("wrong magic cookie", ip(good[:236] + b"\x63\x82\x53\x64" + good[240:])),
        ("truncated inside the header", ip(good[:120])),
        ("truncated right after the cookie", ip(good[:240])),
        ("truncated option (no length byte)", ip(hdr + cookie + mt + bytes((51,)))),
        (
            "option length past the end",
            ip(hdr + cookie + mt + sid + bytes((51, 200)) + b"\x00\x00\x00\x3c"),
        ),
        ("message type of 2 bytes", ip(with_opts(bytes((53, 2, mtype, mtype)), sid, b"\xff"))),
        ("message type repeated (RFC 3396 concat)", ip(with_opts(mt, mt, sid, b"\xff"))),
        ("unknown message type 99", ip(with_opts(bytes((53, 1, 99)), sid, b"\xff"))),
        ("lease time of 3 bytes", ip(with_opts(mt, sid, bytes((51, 3, 0, 0, 60)), b"\xff"))),
        ("server id of 2 bytes", ip(with_opts(mt, bytes((54, 2, 192, 168)), b"\xff"))),
        ("overload value 7", ip(with_opts(mt, sid, bytes((52, 1, 7)), b"\xff"))),
        (
            "overload into a file field with a truncated option",
            ip(
                with_opts(
                    mt,
                    sid,
                    bytes((52, 1, 1)),
                    b"\xff",
                    header=hdr[:108] + (bytes((3, 250, 1, 2)) + bytes(124)) + hdr[236:],
                )
            ),
        ),
        (
            "option overflow: 1200 bytes of options running past the packet",
            ip(with_opts(mt, sid, *(bytes((43, 255)) + bytes(255) for _ in range(4)))[:-40]),
        ),
        ("hlen 17", ip(set_byte(good, 2, 17))),
        ("op BOOTREQUEST", ip(set_byte(good, 0, 1))),
        ("htype 6 (not Ethernet)", ip(set_byte(good, 1, 6))),
        ("foreign xid", ip(good[:4] + bytes(b ^ 0xFF for b in good[4:8]) + good[8:])),
        ("foreign chaddr", ip(good[:28] + bytes(b ^ 0x01 for b in good[28:34]) + good[34:])),
        ("empty UDP payload", ip(b"")),
    ]
    # IP/UDP framing faults around an otherwise perfect reply.
    body = udp(good)
    bad_sum = bytearray(_ip_header(20 + len(body), src, dst) + body)
    bad_sum[10] ^= 0xFF
    out += [
        ("IP header checksum wrong", bytes(bad_sum)),
        ("IP total length beyond the packet", _ip_header(20 + len(body) + 64, src, dst) + body),
        ("IP fragment (MF set)", _ip_header(20 + len(body), src, dst, flags_frag=0x2000) + body),
        ("IP version 6 nibble", _ip_header(20 + len(body), src, dst, version=6) + body),
        (
            "UDP length beyond the IP payload",
            _ip_header(20 + len(body), src, dst) + udp(good, udp_len=len(body) + 100),
        ),
        ("UDP length below 8", _ip_header(20 + len(body), src, dst) + udp(good, udp_len=4)),
        ("UDP to port 67 instead of 68", _retarget_port(ip(good), 67)),
    ]
    return out


def _retarget_port(packet: bytes, dport: int) -> bytes:
    return packet[:22] + struct.pack("!H", dport) + packet[24:]


class Server:
    def __init__(self, how: Behaviour) -> None:
        self.how = how
        self.ip = IPv4Address(how.server_ip)
        self.pool = Pool(int(IPv4Address(how.pool[0])), int(IPv4Address(how.pool[1])))
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        self.sock.bind((how.interface, ETH_P_IP))
        self.log = open(how.log, "a", buffering=1)  # noqa: SIM115 - lives as long as the server

    def event(self, **fields: Any) -> None:
        self.log.write(json.dumps({"t": time.time(), **fields}) + "\n")

    def send(self, packet: bytes, mac: bytes) -> None:
        try:
            self.sock.sendto(packet, (self.how.interface, ETH_P_IP, 0, 0, mac))
        except OSError as exc:
            self.event(error=f"send: {exc}")

    def options(self, mtype: MessageType) -> dict[int, bytes]:
        opts: dict[int, bytes] = {
            Opt.MESSAGE_TYPE: bytes((mtype,)),
            Opt.SERVER_ID: self.ip.packed,
        }
        if mtype == MessageType.NAK:
            opts[Opt.MESSAGE] = b"fakedhcp says no"
            return opts
        lease = self.how.lease_time
        opts[Opt.LEASE_TIME] = lease.to_bytes(4, "big")
        if self.how.timers == "rfc":
            opts[Opt.RENEWAL_TIME] = (lease // 2).to_bytes(4, "big")
            opts[Opt.REBINDING_TIME] = (lease * 7 // 8).to_bytes(4, "big")
        elif self.how.timers == "bogus":
            opts[Opt.RENEWAL_TIME] = (lease * 3).to_bytes(4, "big")
            opts[Opt.REBINDING_TIME] = (0).to_bytes(4, "big")
        opts[Opt.SUBNET_MASK] = b"\xff\xff\xff\x00"
        opts[Opt.ROUTER] = IPv4Address(self.how.router).packed
        opts[Opt.DNS] = IPv4Address(self.how.dns).packed
        for code, value in self.how.extra_options.items():
            opts[int(code)] = bytes.fromhex(value)
        return opts

    def reply(
        self, req: Message, mtype: MessageType, yiaddr: IPv4Address, dst: IPv4Address
    ) -> None:
        payload = codec.encode(
            Message(
                op=BOOTREPLY,
                xid=req.xid,
                chaddr=req.chaddr,
                yiaddr=yiaddr,
                siaddr=self.ip,
                options=self.options(mtype),
            )
        )
        mac = req.chaddr[:6]
        if self.how.malformed_before_reply:
            variants = malformed_variants(payload, self.ip, dst)
            for _name, packet in variants:
                self.send(packet, mac)
            self.event(malformed=len(variants), xid=req.xid)
        self.send(codec.build_ip_udp(payload, src=self.ip, dst=dst, sport=67, dport=68), mac)
        self.event(sent=mtype.name, xid=req.xid, yiaddr=str(yiaddr), to=str(dst))

    def handle(self, payload: bytes) -> None:
        try:
            req = codec.decode(payload)
        except DecodeError:
            return
        mtype = req.message_type
        if req.op != codec.BOOTREQUEST or mtype is None:
            return
        cid = req.options.get(Opt.CLIENT_ID) or req.chaddr
        raw_sid = req.options.get(Opt.SERVER_ID)
        raw_req = req.options.get(Opt.REQUESTED_IP)
        sid = IPv4Address(raw_sid) if raw_sid and len(raw_sid) == 4 else None
        requested = IPv4Address(raw_req) if raw_req and len(raw_req) == 4 else None
        self.event(
            rx=mtype.name,
            xid=req.xid,
            ciaddr=str(req.ciaddr),
            requested=str(requested) if requested else None,
            server_id=str(sid) if sid else None,
        )
        bcast = codec.BROADCAST
        if mtype == MessageType.DISCOVER:
            self.reply(req, MessageType.OFFER, self.pool.for_client(cid), bcast)
        elif mtype == MessageType.REQUEST:
            if sid is not None and sid != self.ip:
                # SELECTING for another server: a rogue may NAK it; a proper server forgets.
                if self.how.nak_foreign_requests:
                    self.reply(req, MessageType.NAK, codec.ZERO, bcast)
                else:
                    self.pool.release(cid)
                return
            renewal = req.ciaddr != codec.ZERO
            if renewal and self.how.nak_renewals:
                self.reply(req, MessageType.NAK, codec.ZERO, bcast)
                return
            if renewal and self.how.new_address_at_renewal:
                self.reply(req, MessageType.ACK, self.pool.for_client(cid, fresh=True), req.ciaddr)
                return
            address = self.pool.for_client(cid)
            if requested is not None and requested != address and sid is None and not renewal:
                self.reply(req, MessageType.NAK, codec.ZERO, bcast)  # INIT-REBOOT, wrong one
                return
            self.reply(req, MessageType.ACK, address, req.ciaddr if renewal else bcast)
        elif mtype == MessageType.RELEASE:
            self.pool.release(cid)
        elif mtype == MessageType.DECLINE and requested is not None:
            self.pool.declined.add(requested)
            if self.pool.bindings.get(cid) == requested:
                self.pool.release(cid)

    def serve(self) -> None:
        self.event(started=os.getpid(), behaviour=self.how.__dict__)
        while True:
            data, addr = self.sock.recvfrom(65535)
            if len(addr) >= 3 and addr[2] == PACKET_OUTGOING:
                continue
            dgram = codec.parse_ip_udp(data)
            if dgram is None or dgram.dport != 67:
                continue
            self.handle(dgram.payload)


def main(argv: list[str]) -> int:
    how = Behaviour.load(argv[0])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Server(how).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
