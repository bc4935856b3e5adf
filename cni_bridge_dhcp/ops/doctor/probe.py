"""`doctor --probe-dhcp`: one DHCP DISCOVER from a throwaway namespace plugged into the bridge.

That namespace has no name: only an fd of this process pins it, so it (and the veth into
it) vanishes with the process even if it is killed; it is also removed explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets

from ...agent.datapath.netlink import node_ipr
from ...agent.datapath.netns import new_anonymous_netns
from ...agent.dhcp import codec, options
from ...agent.dhcp.codec import BOOTREQUEST, Message, MessageType, Opt
from ...agent.dhcp.identity import stable_mac_for
from ...agent.dhcp.lease import request_list
from ...agent.dhcp.transport import PodTransportFactory, Target
from . import checks as dc
from .facts.context import Context

PROBE_PREFIX = "cbdprobe"  # host end of the probe veth: cbdprobe<6 hex>, 14 characters


def _random_mac() -> str:
    """A random locally administered unicast MAC: the agent's stable-MAC rule applied to a
    random identity, so the bit fix-up lives in one place."""
    return stable_mac_for(None, None, secrets.token_hex(16), "doctor-probe", "probe0")


async def _discover(netns_fd: int, ifname: str, mac: str, timeout: float) -> list[dc.Offer]:
    tr = await PodTransportFactory().open(
        Target(netns_path="doctor-probe", ifname=ifname, mac=mac, netns_fd=netns_fd),
        bring_up=True,
    )
    offers: list[dc.Offer] = []
    try:
        xid = secrets.randbits(32)
        chaddr = codec.mac_bytes(mac)
        packet = codec.encode(
            Message(
                op=BOOTREQUEST,
                xid=xid,
                chaddr=chaddr,
                flags=codec.FLAG_BROADCAST,
                options={
                    Opt.MESSAGE_TYPE: bytes((MessageType.DISCOVER,)),
                    Opt.PARAM_REQUEST: request_list(()),
                    Opt.HOSTNAME: b"cni-bridge-dhcp-doctor",
                },
            )
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_send = loop.time()
        settle: float | None = None  # after the first offer, listen briefly for others
        interval = 1.0
        while True:
            now = loop.time()
            end = min(deadline, settle) if settle is not None else deadline
            if now >= end:
                break
            if settle is None and now >= next_send:
                await tr.send_broadcast(packet)
                next_send = now + interval
                interval = min(interval * 2, 4.0)
            wait = min(end, next_send if settle is None else end) - now
            rx = await tr.recv(max(wait, 0.01))
            if rx is None:
                continue
            msg = codec.accept_reply(rx.payload, xid=xid, chaddr=chaddr, types=(MessageType.OFFER,))
            if msg is None:
                continue
            raw_server = msg.options.get(Opt.SERVER_ID)
            server = (
                str(options.ipv4(raw_server))
                if raw_server and len(raw_server) == 4
                else str(rx.src_ip)
            )
            raw_router = msg.options.get(Opt.ROUTER)
            router = (
                str(options.ipv4(raw_router[:4])) if raw_router and len(raw_router) >= 4 else None
            )
            offer = dc.Offer(server=server, address=str(msg.yiaddr), router=router)
            if offer not in offers:
                offers.append(offer)
            if settle is None:
                settle = loop.time() + 0.5
    finally:
        tr.close()
    return offers


def probe_dhcp(
    bridge: str, uplink: str, links: dict[str, dc.LinkFacts], timeout: float
) -> dc.ProbeResult:
    """One DISCOVER from a throwaway namespace plugged into the bridge (or, before the
    takeover, a macvlan on the uplink); every OFFER heard within ``timeout``."""
    if bridge in links and links[bridge].kind == "bridge":
        via = f"through a veth on {bridge}"
    elif uplink in links and links[uplink].master is None:
        via = f"through a macvlan on {uplink}"
    else:
        return dc.ProbeResult(
            via="", timeout=timeout, error=f"neither {bridge} nor {uplink} exists"
        )
    result = dc.ProbeResult(via=via, timeout=timeout)
    host = f"{PROBE_PREFIX}{secrets.token_hex(3)}"
    probe_if = "probe0"
    mac = _random_mac()
    netns_fd = new_anonymous_netns()
    ipr = node_ipr()
    host_index: int | None = None
    try:
        if via.startswith("through a veth"):
            ipr.link(
                "add",
                ifname=host,
                kind="veth",
                peer={"ifname": probe_if, "net_ns_fd": netns_fd, "address": mac},
            )
            host_index = int(ipr.link_lookup(ifname=host)[0])
            ipr.link("set", index=host_index, master=int(ipr.link_lookup(ifname=bridge)[0]))
            ipr.link("set", index=host_index, state="up")
        else:
            ipr.link(
                "add",
                ifname=host,
                kind="macvlan",
                link=int(ipr.link_lookup(ifname=uplink)[0]),
                macvlan_mode="bridge",
                address=mac,
            )
            host_index = int(ipr.link_lookup(ifname=host)[0])
            ipr.link("set", index=host_index, net_ns_fd=netns_fd, ifname=probe_if)
            host_index = None  # it lives (and dies) in the probe namespace now
        result.offers = asyncio.run(_discover(netns_fd, probe_if, mac, timeout))
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if host_index is not None:
            with contextlib.suppress(Exception):
                ipr.link("del", index=host_index)
        ipr.close()
        os.close(netns_fd)  # the last reference: the namespace and its links go away
    return result


def dhcp_check(ctx: Context) -> list[dc.Finding]:
    if not ctx.args.probe_dhcp:
        return dc.check_dhcp_probe(None)
    return dc.check_dhcp_probe(
        probe_dhcp(ctx.bridge, ctx.uplink, ctx.links, ctx.args.probe_timeout)
    )
