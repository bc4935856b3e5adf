"""Uplink takeover in the field: the NIC re-created or released, SLAAC nodes (issue 12).

The agent runs in the node namespace (its link watcher must re-enslave a re-created NIC by
itself); takeovers and restores are driven as in test_uplink.py.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import pytest

from testbed.sandbox import NODE_IP, REPO_ROOT, ROUTER_IP, Sandbox, ping, run
from tests.netns.test_uplink import error, ip_json, journal, ok, sh

ROUTER6 = "2001:db8:77::1"
PREFIX6 = "2001:db8:77::/64"


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 10.0) -> float:
    """Poll ``cond`` until true; returns the seconds it took, fails naming ``what``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:g}s: {what}")


def master_of(sb: Sandbox, ifname: str) -> str | None:
    links = ip_json(sb, "link", "show", "dev", ifname) if _exists(sb, ifname) else []
    return links[0].get("master") if links else None


def _exists(sb: Sandbox, ifname: str) -> bool:
    return run(["ip", "link", "show", "dev", ifname], netns=sb.node, check=False).returncode == 0


def global_addrs(sb: Sandbox, ifname: str) -> list[str]:
    if not _exists(sb, ifname):
        return []
    out = []
    for link in ip_json(sb, "addr", "show", "dev", ifname):
        for a in link.get("addr_info", []):
            if a.get("scope") == "global":
                out.append(f"{a['local']}/{a['prefixlen']}")
    return out


def tentative(sb: Sandbox, ifname: str) -> list[str]:
    """``ifname``'s IPv6 addresses still in duplicate address detection."""
    out = run(["ip", "-6", "-o", "addr", "show", "dev", ifname, "tentative"], netns=sb.node)
    return [line.split()[3] for line in out.stdout.splitlines()]


def recreate_nic(sb: Sandbox) -> None:
    """The node's NIC disappears and comes back (re-plug, driver reload): a new eth0, down."""
    run(["ip", "-n", sb.lan, "link", "del", "node0"])
    run(["ip", "-n", sb.lan, "link", "add", "node0", "type", "veth", "peer", "name", "eth0",
         "netns", sb.node])  # fmt: skip
    run(["ip", "-n", sb.lan, "link", "set", "node0", "master", "lan0", "up"])


def arp_reaches_router(sb: Sandbox, dev: str) -> bool:
    """The node's own ARP check of the router (busybox arping) through ``dev``."""
    cmd = ["busybox", "arping", "-c", "1", "-w", "2", "-I", dev, ROUTER_IP]
    return run(cmd, netns=sb.node, check=False, timeout=15).returncode == 0


def restore_and_check_node_is_back(sb: Sandbox) -> None:
    restored = ok(sb, "restore")
    assert restored["addresses"] == [f"{NODE_IP}/24"]
    assert not _exists(sb, "cni0")
    assert global_addrs(sb, "eth0") == [f"{NODE_IP}/24"]
    assert f"default via {ROUTER_IP} dev eth0" in run(["ip", "route"], netns=sb.node).stdout
    assert ping(sb.node, ROUTER_IP)
    assert arp_reaches_router(sb, "eth0")


# --------------------------------------------------------------------------- item 1


def test_recreated_nic_is_reenslaved_by_the_agent_and_restore_keeps_the_node(
    sandbox: Sandbox,
) -> None:
    sb = sandbox
    sb.start_agent()
    ok(sb, "ensure", "cni0", "eth0")
    snapshot = journal(sb)["snapshot"]
    assert ping(sb.node, ROUTER_IP)

    recreate_nic(sb)
    took = wait_for("the agent re-enslaves the new eth0", lambda: master_of(sb, "eth0") == "cni0")
    assert took < 3  # netlink events: ~0.4 s measured (the periodic check is every 5 s)
    assert wait_for("the node reaches its router again", lambda: ping(sb.node, ROUTER_IP, wait=1))
    wait_for("the agent says what it did", lambda: "was re-created" in sb.agent_logs())
    assert "re-enslaved into cni0, original snapshot kept" in sb.agent_logs()
    j = journal(sb)
    assert j["phase"] == "done" and j["snapshot"] == snapshot  # the original, carried forward
    assert not list(sb.state_dir.glob("uplink.json.*.old"))
    assert global_addrs(sb, "eth0") == []

    # the next ADD's ensure finds it in place: nothing archived, nothing re-snapshotted
    ok(sb, "ensure", "cni0", "eth0")
    assert journal(sb)["snapshot"] == snapshot

    restore_and_check_node_is_back(sb)


def test_nic_back_under_another_name_is_found_by_its_mac(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.start_agent()
    ok(sb, "ensure", "cni0", "eth0")
    mac = ip_json(sb, "link", "show", "dev", "cni0")[0]["address"]
    run(["ip", "-n", sb.lan, "link", "del", "node0"])
    run(["ip", "-n", sb.lan, "link", "add", "node0", "type", "veth", "peer", "name", "eth7",
         "address", mac, "netns", sb.node])  # fmt: skip
    run(["ip", "-n", sb.lan, "link", "set", "node0", "master", "lan0", "up"])
    wait_for(
        "the agent renames it eth0 and re-enslaves it", lambda: master_of(sb, "eth0") == "cni0"
    )
    assert not _exists(sb, "eth7")
    assert wait_for("the node reaches its router again", lambda: ping(sb.node, ROUTER_IP, wait=1))
    restore_and_check_node_is_back(sb)


def test_a_stacked_link_with_the_uplink_mac_is_never_taken_for_the_unplugged_nic(
    sandbox: Sandbox,
) -> None:
    """An operator's passthru macvlan on the bridge carries the bridge's MAC, the uplink's.
    While the NIC is unplugged it is the only link with that MAC: the watcher must neither
    rename it eth0 nor enslave it, and must still find the NIC when it comes back."""
    sb = sandbox
    sb.start_agent()
    ok(sb, "ensure", "cni0", "eth0")
    mac = ip_json(sb, "link", "show", "dev", "cni0")[0]["address"]
    run(["ip", "-n", sb.lan, "link", "del", "node0"])  # unplugged: eth0 is gone
    run(["ip", "link", "add", "link", "cni0", "name", "mv0", "type", "macvlan", "mode",
         "passthru"], netns=sb.node)  # fmt: skip
    run(["ip", "link", "set", "mv0", "up"], netns=sb.node)
    assert ip_json(sb, "link", "show", "dev", "mv0")[0]["address"] == mac
    time.sleep(6)  # its link events and one periodic check (every 5 s) have been handled
    assert _exists(sb, "mv0") and master_of(sb, "mv0") is None
    assert not _exists(sb, "eth0")

    run(["ip", "-n", sb.lan, "link", "add", "node0", "type", "veth", "peer", "name", "eth7",
         "address", mac, "netns", sb.node])  # fmt: skip
    run(["ip", "-n", sb.lan, "link", "set", "node0", "master", "lan0", "up"])
    wait_for("the NIC is renamed eth0 and re-enslaved", lambda: master_of(sb, "eth0") == "cni0")
    assert _exists(sb, "mv0") and master_of(sb, "mv0") is None
    # a passthru macvlan takes the bridge's frames: the node is reachable once it goes
    run(["ip", "link", "del", "mv0"], netns=sb.node)
    assert wait_for("the node reaches its router again", lambda: ping(sb.node, ROUTER_IP, wait=1))


def test_admin_nomaster_is_left_alone_then_next_add_reenslaves_with_original_snapshot(
    sandbox: Sandbox,
) -> None:
    sb = sandbox
    sb.start_agent()
    ok(sb, "ensure", "cni0", "eth0")
    snapshot = journal(sb)["snapshot"]

    sh(sb, "ip link set eth0 nomaster")
    wait_for("the agent logs the released port", lambda: "nomaster" in sb.agent_logs())
    time.sleep(2)
    assert master_of(sb, "eth0") is None  # a deliberate act: not undone behind the admin
    assert "left alone until the next ADD" in sb.agent_logs()

    ok(sb, "ensure", "cni0", "eth0")  # what the next ADD does
    assert master_of(sb, "eth0") == "cni0"
    j = journal(sb)
    assert j["phase"] == "done" and j["snapshot"] == snapshot
    assert not list(sb.state_dir.glob("uplink.json.*.old"))
    assert ping(sb.node, ROUTER_IP)

    restore_and_check_node_is_back(sb)


def test_nomaster_without_agent_then_ensure_keeps_original_snapshot(sandbox: Sandbox) -> None:
    """Even with no agent watching, the re-takeover never replaces the real snapshot."""
    sb = sandbox
    ok(sb, "ensure", "cni0", "eth0")
    snapshot = journal(sb)["snapshot"]
    recreate_nic(sb)
    ok(sb, "ensure", "cni0", "eth0")
    assert journal(sb)["snapshot"] == snapshot
    assert master_of(sb, "eth0") == "cni0"
    restore_and_check_node_is_back(sb)


def test_restore_refuses_to_strip_the_node(sandbox: Sandbox) -> None:
    """A snapshot with fewer addresses/routes than the bridge holds (as an older version
    wrote after a re-takeover) is refused: non-zero, nothing changed, node still reachable."""
    sb = sandbox
    ok(sb, "ensure", "cni0", "eth0")
    data = journal(sb)
    data["snapshot"]["addresses"] = []
    data["snapshot"]["routes"] = []
    (sb.state_dir / "uplink.json").write_text(json.dumps(data))
    err = error(sb, "restore")
    assert err["code"] == 102
    assert f"{NODE_IP}/24" in err["details"] and "cni0" in err["msg"]
    assert master_of(sb, "eth0") == "cni0"
    assert global_addrs(sb, "cni0") == [f"{NODE_IP}/24"]
    assert ping(sb.node, ROUTER_IP)
    assert journal(sb)["phase"] == "done"  # still recorded: a fixed restore can run later
    # the admin command says so too, with a non-zero exit
    proc = run(
        [sys.executable, "-m", "cni_bridge_dhcp", "uplink", "restore", "--state-dir",
         str(sb.state_dir)],
        netns=sb.node, check=False, env={"PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    assert proc.returncode != 0 and "restored" not in proc.stdout
    assert ping(sb.node, ROUTER_IP)


def test_restore_verifies_the_gateway_and_stays_on_the_bridge_when_it_fails(
    sandbox: Sandbox,
) -> None:
    sb = sandbox
    ok(sb, "ensure", "cni0", "eth0")
    # the router stops answering ARP: a restore cannot show the node reaches it
    run(["sysctl", "-qw", "net.ipv4.conf.lan0.arp_ignore=8"], netns=sb.lan)
    err = error(sb, "restore")
    assert err["code"] == 102 and ROUTER_IP in err["details"]
    assert "bridge" in err["msg"]
    assert master_of(sb, "eth0") == "cni0"
    assert global_addrs(sb, "cni0") == [f"{NODE_IP}/24"]
    run(["sysctl", "-qw", "net.ipv4.conf.lan0.arp_ignore=0"], netns=sb.lan)
    assert ping(sb.node, ROUTER_IP)
    assert journal(sb)["phase"] == "done"
    restore_and_check_node_is_back(sb)


# --------------------------------------------------------------------------- item 1b


def slaac_lan(sb: Sandbox, *, ipv4_default: bool = True) -> None:
    """The LAN router announces 2001:db8:77::/64 (SLAAC) and the node learns it on eth0.

    Without ``ipv4_default`` the node's only default route is the RA's (a link-local
    gateway), so the takeover verifies the gateway by neighbour discovery."""
    sh(sb, f"ip -6 addr add {ROUTER6}/64 dev lan0 nodad", netns=sb.lan)
    sb.start_dnsmasq(extra=["--enable-ra", "--dhcp-range=2001:db8:77::,ra-only,64",
                            "--ra-param=lan0,3"])  # fmt: skip
    # a router solicitation from the node gets an answer at once
    sh(sb, "ip link set eth0 down", "ip link set eth0 up")
    if ipv4_default:
        sh(sb, f"ip route add default via {ROUTER_IP}")

    def learned() -> bool:
        routes = run(["ip", "-6", "route"], netns=sb.node).stdout
        return any(a.startswith("2001:db8:77:") for a in global_addrs(sb, "eth0")) and (
            "default via fe80::" in routes
        )

    wait_for("the node's SLAAC address and RA default route", learned, timeout=20)
    # (its SLAAC address is usable once DAD is over)
    wait_for("the node pings the router over IPv6", lambda: ping(sb.node, ROUTER6), 10)


@pytest.mark.parametrize("ipv4_default", [True, False], ids=["dual-stack", "ipv6-default-only"])
def test_slaac_node_keeps_ipv6_after_takeover(sandbox: Sandbox, ipv4_default: bool) -> None:
    sb = sandbox
    slaac_lan(sb, ipv4_default=ipv4_default)
    ok(sb, "ensure", "cni0", "eth0")
    # The node's IPv6 addresses are usable the moment the takeover returns: they were
    # checked on the uplink already, and no second DAD round leaves them tentative.
    assert tentative(sb, "cni0") == [], tentative(sb, "cni0")

    def via_bridge() -> bool:
        out = run(["ip", "-6", "route", "get", ROUTER6], netns=sb.node).stdout
        return " dev cni0 " in out

    wait_for("the route to the router's global address leaves via cni0", via_bridge, 5)
    wait_for("an IPv6 ping from the node reaches the router", lambda: ping(sb.node, ROUTER6), 5)

    def routes() -> str:
        return run(["ip", "-6", "route"], netns=sb.node).stdout

    # the bridge solicits and learns the router's announcement itself
    wait_for("the RA default route on cni0", lambda: "default via fe80::" in routes(), 8)
    assert f"{PREFIX6} dev cni0" in routes()
    assert " dev cni0 " in run(["ip", "-6", "route", "get", "2001:db8:99::1"], netns=sb.node).stdout
    assert " dev eth0" not in routes(), routes()
    sysctl = {
        k: run(["sysctl", "-n", f"net.ipv6.conf.{k}"], netns=sb.node).stdout.strip()
        for k in ("eth0.accept_ra", "eth0.autoconf", "cni0.accept_ra")
    }
    assert sysctl["eth0.accept_ra"] == "0" and sysctl["eth0.autoconf"] == "0"
    assert sysctl["cni0.accept_ra"] in ("1", "2")
    # still working a few RAs later (the port never re-learns routes)
    time.sleep(4)
    assert via_bridge() and ping(sb.node, ROUTER6)

    ok(sb, "restore")
    wait_for("IPv6 back on eth0 after restore", lambda: ping(sb.node, ROUTER6), 10)
    assert ping(sb.node, ROUTER_IP)  # on-link either way


def test_an_existing_bridge_gets_its_own_dad_setting_back_on_rollback(sandbox: Sandbox) -> None:
    """The takeover turns DAD off on the bridge (the node's addresses are already checked);
    a bridge that existed before a takeover that fails gets its own setting back."""
    sb = sandbox
    sh(sb, "ip link add cni0 type bridge", "ip link set cni0 up")
    sysctl = "net.ipv6.conf.cni0.accept_dad"
    run(["sysctl", "-qw", f"{sysctl}=2"], netns=sb.node)
    # The router stops answering ARP: after the move the gateway looks unreachable.
    run(["sysctl", "-qw", "net.ipv4.conf.lan0.arp_ignore=8"], netns=sb.lan)
    assert error(sb, "ensure", "cni0", "eth0")["code"] == 102
    assert journal(sb)["phase"] == "rolled_back"
    assert _exists(sb, "cni0"), "the bridge existed before: the rollback keeps it"
    assert run(["sysctl", "-n", sysctl], netns=sb.node).stdout.strip() == "2"

    run(["sysctl", "-qw", "net.ipv4.conf.lan0.arp_ignore=0"], netns=sb.lan)
    ok(sb, "ensure", "cni0", "eth0")
    assert run(["sysctl", "-n", sysctl], netns=sb.node).stdout.strip() == "0"
