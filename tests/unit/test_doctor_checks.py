"""doctor's other decisions on captured inputs: agent, CNI config, uplink, pod routes, state
records, server leases, and the output contract (exit code, text, JSON)."""

from __future__ import annotations

import json
from pathlib import Path

from cni_bridge_dhcp.ops.doctor import checks as dc
from cni_bridge_dhcp.ops.doctor import parse_args
from cni_bridge_dhcp.ops.doctor.facts.leases import read_server_leases

NODE = "192.168.77.10"
ROUTER = "192.168.77.1"

# ----------------------------------------------------------------------------- agent


def test_agent_down_says_how_to_start_it() -> None:
    finding = dc.check_agent("/run/cni-bridge-dhcp/agent.sock", "No such file", False, 0)
    assert not finding.ok and "agent is not running" in finding.problem
    assert "systemctl start cni-bridge-dhcp.socket" in finding.fix and "error 11" in finding.fix
    stale = dc.check_agent("/run/x.sock", "Connection refused", True, 0)
    assert "died without removing it" in stale.problem
    assert dc.check_agent("/run/x.sock", None, True, 3).ok


# ----------------------------------------------------------------------------- CNI config

OURS = {"cniVersion": "1.0.0", "name": "lan", "plugins": [{"type": "cni-bridge-dhcp"}]}


def test_cni_config_ours_must_sort_first() -> None:
    flannel = dc.ConfFile("10-flannel.conflist", {"name": "cbr0", "plugins": [{"type": "flannel"}]})
    ours = dc.ConfFile("20-cni-bridge-dhcp.conflist", OURS)
    finding = dc.check_cni_config("/etc/cni/net.d", [ours, flannel])
    assert not finding.ok and "10-flannel.conflist" in finding.problem
    assert dc.check_cni_config("/etc/cni/net.d", [dc.ConfFile("00-a.conflist", OURS), flannel]).ok


def test_cni_config_missing_or_broken() -> None:
    broken = dc.ConfFile("10-cni-bridge-dhcp.conflist", None, "invalid JSON: x")
    finding = dc.check_cni_config("/etc/cni/net.d", [broken])
    assert not finding.ok and "invalid JSON" in finding.problem
    assert not dc.check_cni_config("/etc/cni/net.d", []).ok
    single = dc.ConfFile("10-x.conf", {"cniVersion": "0.4.0", "type": "cni-bridge-dhcp"})
    assert dc.check_cni_config("/etc/cni/net.d", [single]).ok


# ----------------------------------------------------------------------------- uplink


def link(name: str, kind: str = "", master: str | None = None, *addrs: str) -> dc.LinkFacts:
    return dc.LinkFacts(name, kind, master, False, tuple(addrs))


def test_uplink_states() -> None:
    healthy = {"eth0": link("eth0", "", "cni0"), "cni0": link("cni0", "bridge", None, f"{NODE}/24")}
    assert dc.check_uplink("eth0", "cni0", healthy, True).ok

    released = {**healthy, "eth0": link("eth0")}
    finding = dc.check_uplink("eth0", "cni0", released, True)
    assert not finding.ok and "not a port of any bridge" in finding.problem
    assert "ip link set eth0 master cni0" in finding.fix

    readdressed = {**healthy, "eth0": link("eth0", "", "cni0", f"{NODE}/24")}
    assert (
        "holds addresses 192.168.77.10/24"
        in dc.check_uplink("eth0", "cni0", readdressed, True).problem
    )

    assert "does not exist" in dc.check_uplink("eth9", "cni0", healthy, True).problem
    wifi = {"wlan0": dc.LinkFacts("wlan0", "", None, True, ())}
    assert "Wi-Fi" in dc.check_uplink("wlan0", "cni0", wifi, False).problem
    assert dc.check_uplink("eth0", "cni0", {"eth0": link("eth0")}, False).ok  # before the first ADD
    assert "bridge is gone" in dc.check_uplink("eth0", "cni0", {"eth0": link("eth0")}, True).problem
    dummy = {**healthy, "cni0": link("cni0", "dummy")}
    assert "is a dummy link" in dc.check_uplink("eth0", "cni0", dummy, True).problem


# ----------------------------------------------------------------------------- pod routes

# `ip -j -4 route show table main` inside a pod right after ADD
POD_ROUTES = [
    {"dst": "default", "gateway": NODE, "dev": "eth0", "protocol": "static", "flags": []},
    {"dst": "192.168.77.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link"},
    {"dst": NODE, "dev": "eth0", "protocol": "static", "scope": "link", "flags": []},
]


def pod(routes: list[dict[str, object]] | None, error: str = "") -> dc.PodRouteFacts:
    return dc.PodRouteFacts(
        "pod default/web-a (lan, eth0)", "/run/netns/x", "eth0", NODE, routes, error
    )


def test_pod_routes_via_the_node_are_fine() -> None:
    assert [f.ok for f in dc.check_pod_routes([pod(POD_ROUTES)])] == [True]


def test_pod_default_route_via_the_router_is_reported_with_the_repair_command() -> None:
    changed = [{**POD_ROUTES[0], "gateway": ROUTER}, *POD_ROUTES[1:]]
    (finding,) = dc.check_pod_routes([pod(changed)])
    assert "via 192.168.77.1, not via the node 192.168.77.10" in finding.problem
    assert (
        "nsenter --net=/run/netns/x ip route replace default via 192.168.77.10 dev eth0"
        in finding.fix
    )


def test_pod_route_variants() -> None:
    assert dc.default_route_problem(NODE, "eth0", POD_ROUTES[1:]) == "has no default route"
    other_dev = [{**POD_ROUTES[0], "dev": "net1"}]
    assert "leaves through net1" in str(dc.default_route_problem(NODE, "eth0", other_dev))
    # the lowest metric wins
    two = [{**POD_ROUTES[0], "gateway": ROUTER, "metric": 10}, {**POD_ROUTES[0], "metric": 100}]
    assert "via 192.168.77.1" in str(dc.default_route_problem(NODE, "eth0", two))
    unreadable = dc.check_pod_routes([pod(None, "/run/netns/x: No such file or directory")])
    assert not unreadable[0].ok and "cannot read" in unreadable[0].problem
    # defaultRoute "none": nothing to compare
    none = dc.PodRouteFacts("p", "/x", "eth0", None, [], "")
    assert dc.check_pod_routes([none])[0].ok


# ----------------------------------------------------------------------------- state


def att(inode: int | None, *, state: str = "ready", created: float = 1000.0) -> dc.AttachmentFacts:
    return dc.AttachmentFacts(
        "lan/cid1/eth0", "pod default/web-a (lan, eth0)", state, "/run/netns/p", 42, inode, created
    )


def journal(phase: str, *, lock_held: bool = False, here: bool = True) -> dc.JournalFacts:
    return dc.JournalFacts(phase, "eth0", "cni0", "addr:0", here, lock_held, 1000.0)


def test_state_healthy() -> None:
    (finding,) = dc.check_state(
        "/s", [att(42)], journal("done"), [dc.LeaseRecordFacts("lan/cid1/eth0", "a")], 2000
    )
    assert finding.ok


def test_stale_attachment_whose_netns_is_gone_or_replaced() -> None:
    (gone,) = dc.check_state("/s", [att(None)], None, [], 2000)
    assert not gone.ok and "no longer exists" in gone.problem
    assert "CNI_COMMAND=DEL CNI_CONTAINERID=cid1 CNI_IFNAME=eth0" in gone.fix
    # what tests/e2e/test_missed_del.py shows the agent and a DEL do for such a pod
    assert "cleans it up at its next start (the lease is released from the node" in gone.fix
    assert "still sends the DHCPRELEASE, from the node" in gone.fix
    (replaced,) = dc.check_state("/s", [att(43)], None, [], 2000)
    assert "is another namespace now" in replaced.problem


def test_old_pending_attachment_and_orphan_lease_record() -> None:
    assert dc.check_state("/s", [att(42, state="pending")], None, [], 1100)[0].ok  # ADD running
    (old,) = dc.check_state("/s", [att(42, state="pending")], None, [], 1000 + dc.PENDING_GRACE + 1)
    assert "interrupted" in old.problem
    (orphan,) = dc.check_state(
        "/s", [], None, [dc.LeaseRecordFacts("lan/gone/eth0", "192.168.77.150/24")], 0
    )
    assert "lan/gone/eth0" in orphan.problem


def test_interrupted_uplink_journal_unless_someone_holds_the_lock() -> None:
    (finding,) = dc.check_state("/s", [], journal("in_progress"), [], 0)
    assert not finding.ok and "interrupted (phase in_progress, last step addr:0)" in finding.problem
    assert "cni-bridge-dhcp uplink restore" in finding.fix
    assert dc.check_state("/s", [], journal("in_progress", lock_held=True), [], 0)[0].ok
    (foreign,) = dc.check_state("/s", [], journal("done", here=False), [], 0)
    assert "another boot" in foreign.problem


# ----------------------------------------------------------------------------- server leases

# dhcpd.leases from the sandbox: web-a holds .100; web-b was added then deleted (released).
DHCPD_LEASES = r"""# The format of this file is documented in the dhcpd.leases(5) manual page.
# This lease file was written by isc-dhcp-4.4.3-P1

# authoring-byte-order entry is generated, DO NOT DELETE
authoring-byte-order little-endian;

server-duid "\000\001\000\0012\235,\236J\350X\2455V";

lease 192.168.77.100 {
  starts 6 2026/11/28 06:09:35;
  ends 6 2026/11/28 06:19:35;
  cltt 6 2026/11/28 06:09:35;
  binding state active;
  next binding state free;
  rewind binding state free;
  hardware ethernet 4a:67:74:83:74:b9;
  uid "\000k8s:default/web-a/lan/eth0";
  client-hostname "web-a";
}
lease 192.168.77.101 {
  starts 6 2026/11/28 06:09:35;
  ends 6 2026/11/28 06:19:35;
  cltt 6 2026/11/28 06:09:35;
  binding state active;
  next binding state free;
  rewind binding state free;
  hardware ethernet 9a:55:e2:b2:73:ff;
  uid "\000k8s:default/web-b/lan/eth0";
  client-hostname "web-b";
}
lease 192.168.77.101 {
  starts 6 2026/11/28 06:09:35;
  ends 6 2026/11/28 06:09:35;
  tstp 6 2026/11/28 06:09:35;
  cltt 6 2026/11/28 06:09:35;
  binding state free;
  hardware ethernet 9a:55:e2:b2:73:ff;
  uid "\000k8s:default/web-b/lan/eth0";
}
"""
NOW = 1795846200.0  # 2026-11-28 06:10:00 UTC, inside web-a's lease
WEB_A = dc.PodLease(
    "pod default/web-a", "192.168.77.100", "4a:67:74:83:74:b9", b"\x00k8s:default/web-a/lan/eth0"
)


def server(tmp_path: Path, extra: str = "") -> dict[str, dc.ServerLease]:
    path = tmp_path / "dhcpd.leases"
    path.write_text(DHCPD_LEASES + extra)
    return read_server_leases(str(path))


def test_the_last_entry_per_address_wins(tmp_path: Path) -> None:
    leases = server(tmp_path)
    assert leases["192.168.77.101"].state == "free"  # released after being active
    assert leases["192.168.77.100"].uid == b"\x00k8s:default/web-a/lan/eth0"
    assert leases["192.168.77.100"].active(NOW) and not leases["192.168.77.100"].active(NOW + 3600)


def test_agreement(tmp_path: Path) -> None:
    (finding,) = dc.check_server_leases("f", server(tmp_path), [WEB_A], NOW, shared_lan=False)
    assert finding.ok


def test_leaked_lease_the_server_thinks_active(tmp_path: Path) -> None:
    leases = server(tmp_path)
    (finding,) = dc.check_server_leases("f", leases, [], NOW, shared_lan=False)
    assert (
        not finding.ok
        and "192.168.77.100 active for pod identity 'k8s:default/web-a/lan/eth0'" in finding.problem
    )
    assert dc.check_server_leases("f", leases, [], NOW, shared_lan=True)[0].ok


def test_pod_lease_unknown_freed_or_given_away(tmp_path: Path) -> None:
    web_b = dc.PodLease("pod default/web-b", "192.168.77.101", "9a:55:e2:b2:73:ff", None)
    web_c = dc.PodLease("pod default/web-c", "192.168.77.150", "02:00:00:00:00:01", None)
    (freed, unknown) = dc.check_server_leases(
        "f", server(tmp_path), [WEB_A, web_b, web_c], NOW, True
    )
    assert "web-b holds 192.168.77.101, but the server has it as free" in freed.problem
    assert "server has no record of it" in unknown.problem
    thief = dc.PodLease("pod default/web-a", "192.168.77.100", "02:00:00:00:00:02", b"\x00other")
    (given,) = dc.check_server_leases("f", server(tmp_path), [thief], NOW, True)
    assert "gave it to another client (4a:67:74:83:74:b9)" in given.problem


def test_foreign_clients_are_not_ours(tmp_path: Path) -> None:
    laptop = """lease 192.168.77.120 {
  starts 6 2026/11/28 06:09:35;
  ends 6 2026/11/28 06:19:35;
  binding state active;
  hardware ethernet 11:22:33:44:55:66;
  uid "\\001\\021\\"3DUf";
}
"""
    (finding,) = dc.check_server_leases("f", server(tmp_path, laptop), [WEB_A], NOW, False)
    assert finding.ok


def test_uid_decoding() -> None:
    assert dc.decode_dhcpd_uid(r'"\000cni:abc/lan/eth0"') == b"\x00cni:abc/lan/eth0"
    assert dc.decode_dhcpd_uid(r'"\001\021\"3"') == b'\x01\x11"3'
    assert dc.decode_dhcpd_uid("01:52:54:00:12:34:56") == bytes.fromhex("01525400123456")
    assert dc.decode_dhcpd_uid("zz") is None


def test_unreadable_server_file() -> None:
    (finding,) = dc.check_server_leases("/nope", None, [], NOW, False, "No such file")
    assert not finding.ok and "/nope" in finding.problem
    assert dc.check_server_leases(None, None, [], NOW, False)[0].ok


# ----------------------------------------------------------------------------- DHCP probe


def test_probe_outcomes() -> None:
    assert dc.check_dhcp_probe(None)[0].ok
    silent = dc.ProbeResult(via="through a veth on cni0", timeout=8.0)
    (finding,) = dc.check_dhcp_probe(silent)
    assert not finding.ok and "no DHCP server answered" in finding.problem
    answered = dc.ProbeResult(
        "through a veth on cni0", 8.0, [dc.Offer(ROUTER, "192.168.77.150", ROUTER)]
    )
    assert dc.check_dhcp_probe(answered)[0].ok
    rogue = dc.ProbeResult(
        "v",
        8.0,
        [dc.Offer(ROUTER, "192.168.77.150", ROUTER), dc.Offer("192.168.77.2", "10.0.0.5", None)],
    )
    assert "2 DHCP servers answered" in dc.check_dhcp_probe(rogue)[0].problem
    failed = dc.ProbeResult("v", 8.0, error="neither cni0 nor eth0 exists")
    assert "could not run" in dc.check_dhcp_probe(failed)[0].problem


# ----------------------------------------------------------------------------- output


def test_output_contract() -> None:
    good = dc.ok(dc.AGENT, "agent answers")
    problem = dc.bad(dc.UPLINK, "eth0 is not a port", "line one\nline two")
    assert dc.exit_code([good]) == 0 and dc.exit_code([good, problem]) == 1
    text = dc.render_text([problem, good])
    assert text.splitlines()[0].startswith("ok    agent")  # report order, not discovery order
    assert "FAIL  uplink: eth0 is not a port\n      fix: line one\n           line two" in text
    assert text.endswith("1 problem(s) found")
    data = json.loads(dc.render_json([good, problem]))
    assert data["ok"] is False
    assert data["checks"][1] == {
        "check": "uplink",
        "ok": False,
        "problem": "eth0 is not a port",
        "fix": "line one\nline two",
        "detail": "",
    }
    assert dc.render_text([good]).endswith("no problems found")


def test_cli_options() -> None:
    args = parse_args(["--json", "--probe-dhcp", "--root", "/host", "--server-leases", "f"])
    assert args.json and args.probe_dhcp and args.root == "/host" and args.server_leases == "f"
    assert args.conf_dir == "/host/etc/cni/net.d"  # inside the DaemonSet's container
    defaults = parse_args([])
    assert defaults.state_dir == "/var/lib/cni-bridge-dhcp"
    assert defaults.conf_dir == "/etc/cni/net.d"
    assert parse_args(["--root", "/host", "--conf-dir", "/x"]).conf_dir == "/x"


def test_an_abandoned_entry_without_hardware_supersedes(tmp_path: Path) -> None:
    abandoned = """lease 192.168.77.100 {
  starts 6 2026/11/28 06:09:40;
  ends 0 2026/11/29 06:09:40;
  binding state abandoned;
  next binding state free;
}
"""
    leases = server(tmp_path, abandoned)
    assert leases["192.168.77.100"].state == "abandoned"
    (finding,) = dc.check_server_leases("f", leases, [WEB_A], NOW, True)
    assert "the server has it as abandoned" in finding.problem
