"""datapath/rtnl.py's address and route reads, kernel-filtered (NETLINK_GET_STRICT_CHK), give
what `ip` shows for each link of a namespace with many links, as the unfiltered reads did.

A namespace of our own with veth pairs, each with IPv6 addresses and routes; the answers
are compared with `ip -j` run in the same namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from socket import AF_INET, AF_INET6

import pytest

from cni_bridge_dhcp.agent.datapath.netns import run_in_netns
from cni_bridge_dhcp.agent.datapath.rtnl import RT_TABLE_MAIN, Rtnl, new_socket

LINKS = 6


def ip(ns: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "-n", ns, *args], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"cbd-rtnl-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for i in range(LINKS):
            ip(name, "link", "add", f"d{i}", "type", "veth", "peer", f"p{i}")
            ip(name, "link", "set", f"p{i}", "up")
            ip(name, "link", "set", f"d{i}", "up")
            ip(name, "addr", "add", f"fd00:{i}::1/64", "dev", f"d{i}", "nodad")
            ip(name, "addr", "add", f"10.9.{i}.1/24", "dev", f"d{i}")
            ip(name, "-6", "route", "add", f"fd10:{i}::/48", "via", f"fd00:{i}::2", "dev", f"d{i}")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _rtnl(ns: str) -> Rtnl:
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        return Rtnl(run_in_netns(fd, new_socket))
    finally:
        os.close(fd)


def test_filtered_address_and_route_reads_match_ip(ns: str) -> None:
    links = {link["ifname"]: link["ifindex"] for link in json.loads(ip(ns, "-j", "link"))}
    with _rtnl(ns) as rt:
        for i in range(LINKS):
            name = f"d{i}"
            index = links[name]
            for family, flag in ((AF_INET6, "-6"), (AF_INET, "-4")):
                want = sorted(
                    (a["local"], a["prefixlen"])
                    for entry in json.loads(ip(ns, "-j", flag, "addr", "show", "dev", name))
                    for a in entry["addr_info"]
                )
                got = sorted((a.address, a.prefixlen) for a in rt.addrs(family, index))
                assert got == want, (name, family)
            want_routes = sorted(
                (r["dst"], r.get("gateway"))
                for r in json.loads(ip(ns, "-j", "-6", "route", "show", "dev", name))
            )
            got_routes = sorted(
                (f"{r.dst}/{r.dst_len}" if r.dst else "default", r.gateway)
                for r in rt.routes(AF_INET6, index, RT_TABLE_MAIN)
            )
            assert got_routes == want_routes, name


def test_inet6_flags_read_raw_match_pyroute2(ns: str) -> None:
    """podaddr.ra_flags reads IFLA_INET6_FLAGS raw (was pyroute2, ~1.5 ms of CPU per ADD)."""
    from cni_bridge_dhcp.agent.datapath.netlink import netns_ipr
    from cni_bridge_dhcp.agent.datapath.rtnl import inet6_flags

    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        with netns_ipr(fd) as ipr:
            want = {}
            for msg in ipr.get_links():
                inet6 = msg.get_attr("IFLA_AF_SPEC").get_attr("AF_INET6")
                want[msg.get_attr("IFLA_IFNAME")] = int(inet6.get_attr("IFLA_INET6_FLAGS") or 0)
    finally:
        os.close(fd)
    assert any(want.values()), "no link has IPv6 flags set: nothing compared"
    with _rtnl(ns) as rt:
        got = {name: inet6_flags(rt.get_link(name=name)) for name in want}  # type: ignore[arg-type]
    # IF_RS_SENT (0x10) comes on by itself once a link that just came up solicits a router,
    # possibly between the two reads.
    rs_sent = 0x10
    assert {n: f & ~rs_sent for n, f in got.items()} == {n: f & ~rs_sent for n, f in want.items()}


def test_link_reads_match_ip_with_and_without_stats(ns: str) -> None:
    """Links are read without their counters and with only the attributes the agent uses;
    link_groups reads only the group: both still give what `ip` shows."""
    ip(ns, "link", "set", "d1", "group", "7")
    ip(ns, "link", "set", "p2", "group", "1128464385")  # in the range the veth batches use
    ip(ns, "link", "set", "d3", "mtu", "1400")
    want = {
        link["ifindex"]: (link["ifname"], link["mtu"], link.get("address"), link["group"])
        for link in json.loads(ip(ns, "-j", "-d", "link"))
    }
    numeric = {
        link["ifindex"]: link["group"]
        for link in json.loads(ip(ns, "-j", "-d", "-N", "link"))  # -N: groups as numbers
    }
    with _rtnl(ns) as rt:
        got = {link.index: (link.name, link.mtu, link.address, link.group) for link in rt.links()}
        groups = rt.link_groups()
    assert {i: (n, m, a) for i, (n, m, a, _) in got.items()} == {
        i: (n, m, a) for i, (n, m, a, _) in want.items()
    }
    assert groups == {i: g for i, (_, _, _, g) in got.items()}
    assert groups == {i: int(g) for i, g in numeric.items()}
    assert 7 in groups.values() and 1128464385 in groups.values()
