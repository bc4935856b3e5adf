"""The node's own DHCP lease survives the uplink takeover (issue 15, part B).

The node's eth0 address is leased by a real client (busybox udhcpc from dnsmasq, ISC
dhclient from isc-dhcp-server) still running, as netplan/ifupdown leave it. An ADD takes
the uplink over; then we wait past the lease's end (and, for dhcpd's 30 s leases, past 3
lease times): the node still has its address on cni0 with a fresh lifetime, the server's
lease for the node's identity (MAC, and dhclient's configured client id) was renewed, the
previous client is paused, and a pod still reaches the router. ``uplink restore`` gives
the address back to eth0 with its remaining lifetime and resumes the client.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from testbed.sandbox import (
    REPO_ROOT,
    ROUTER_IP,
    Daemon,
    Sandbox,
    dhcpd_config,
    parse_dnsmasq_leases,
    ping,
    run,
)
from tests.e2e.helpers import NET, add, conflist
from tests.netns.test_uplink import ok as uplink_ok

pytestmark = [pytest.mark.netns, pytest.mark.slow]

UDHCPC_SCRIPT = """#!/bin/sh
echo "$1 ip=$ip lease=$lease" >> "$(dirname "$0")/udhcpc.events"
case "$1" in
  bound|renew)
    ip addr replace "$ip/$mask" dev "$interface" valid_lft "$lease" preferred_lft "$lease"
    [ "$1" = bound ] && ip route replace default via "$router" dev "$interface"
    ;;
esac
exit 0
"""

DHCLIENT_SCRIPT = """#!/bin/sh
echo "$reason ip=$new_ip_address lease=$new_dhcp_lease_time" >> "$(dirname "$0")/dhclient.events"
case "$reason" in
  PREINIT) ip link set dev "$interface" up ;;
  BOUND|RENEW|REBIND|REBOOT)
    ip addr replace "$new_ip_address/24" dev "$interface" \
      valid_lft "$new_dhcp_lease_time" preferred_lft "$new_dhcp_lease_time"
    ip route replace default via "${new_routers%% *}" dev "$interface"
    ;;
esac
exit 0
"""

DOCTOR = "import sys; from cni_bridge_dhcp.ops.doctor import doctor_main; sys.exit(doctor_main(sys.argv[1:]))"

CLIENT_ID = "node-test-id"  # dhclient's configured option 61: the keeper must send it too


def _prepare_node(sb: Sandbox) -> None:
    """eth0 without the sandbox's static address: the DHCP client gives it one."""
    run(["ip", "addr", "flush", "dev", "eth0"], netns=sb.node)


def _addr(sb: Sandbox, dev: str) -> dict[str, Any] | None:
    """The IPv4 address on ``dev`` (local, prefixlen, valid_life_time), or None."""
    proc = run(["ip", "-j", "-4", "addr", "show", "dev", dev], netns=sb.node, check=False)
    for link in json.loads(proc.stdout or "[]"):
        for a in link.get("addr_info", []):
            info: dict[str, Any] = a
            return info
    return None


def _wait_for_address(sb: Sandbox, dev: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        a = _addr(sb, dev)
        if a is not None:
            return a
        time.sleep(0.2)
    raise AssertionError(f"no IPv4 address on {dev} after {timeout}s")


def _node_lease_finding(sb: Sandbox) -> dict[str, Any]:
    """doctor's node-lease finding, run in the node namespace (network-manager files from an
    empty stand-in root)."""
    root = sb.tmp / "root"
    root.mkdir(exist_ok=True)
    cmd = [sys.executable, "-c", DOCTOR, "--json", "--socket", str(sb.agent_socket),
           "--state-dir", str(sb.state_dir), "--conf-dir", str(sb.netconf_dir),
           "--root", str(root), "--bridge", "cni0", "--uplink", "eth0"]  # fmt: skip
    proc = run(cmd, netns=sb.node, check=False, timeout=120, env={"PYTHONPATH": str(REPO_ROOT)})
    found: dict[str, Any] = next(
        c for c in json.loads(proc.stdout)["checks"] if c["check"] == "node-lease"
    )
    return found


def _proc_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2]


def _mac(sb: Sandbox, dev: str) -> str:
    out = json.loads(run(["ip", "-j", "link", "show", "dev", dev], netns=sb.node).stdout)
    return str(out[0]["address"])


def _restore(sb: Sandbox) -> None:
    run(
        [sys.executable, "-m", "cni_bridge_dhcp", "uplink", "restore",
         "--state-dir", str(sb.state_dir), "--socket", str(sb.agent_socket)],
        netns=sb.node, env={"PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip


def _takeover_and_wait(
    sb: Sandbox, client: Daemon, wait: float, *, restart_agent_after: float = 0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """ADD (takeover); wait (restarting the agent after ``restart_agent_after`` s: the next
    one re-adopts the node lease); the node's address before and after, the pod working."""
    before = _wait_for_address(sb, "eth0")
    assert before["valid_life_time"] < 0xFFFFFFFF, before
    sb.start_agent()
    pod = sb.add_pod("a")
    add(sb, pod, conflist(sb))
    on_bridge = _addr(sb, "cni0")
    assert on_bridge is not None and on_bridge["local"] == before["local"]
    assert _proc_state(client.pid) == "T", "the previous client was not paused"
    if restart_agent_after:
        time.sleep(restart_agent_after)
        next(d for d in sb.daemons if d.name == "agent" and d.alive()).stop()
        sb.start_agent()
        wait -= restart_agent_after
    time.sleep(wait)
    after = _addr(sb, "cni0")
    assert after is not None, "the node lost its address:\n" + sb.agent_logs()[-4000:]
    assert after["local"] == before["local"]
    assert _addr(sb, "eth0") is None, "an address came back on the bridge port"
    assert ping(pod.name, ROUTER_IP), "the pod lost the router"
    assert ping(sb.node, ROUTER_IP), "the node lost the router"
    sb.cnitool("del", NET, pod, conflist=conflist(sb))
    return before, after


def _check_restored(sb: Sandbox, client: Daemon, address: str) -> None:
    _restore(sb)
    back = _addr(sb, "eth0")
    assert back is not None and back["local"] == address
    # a lease's lifetime (the one the keeper last set, or the resumed client's), never forever
    assert 0 < back["valid_life_time"] < 0xFFFFFFFF
    assert _addr(sb, "cni0") is None
    assert _proc_state(client.pid) != "T", "the previous client was not resumed"
    assert not (sb.state_dir / "node-dhcp.json").exists()


def test_udhcpc_lease_from_dnsmasq_kept_past_its_end(sandbox: Sandbox) -> None:
    sb = sandbox
    _prepare_node(sb)
    # dnsmasq's shortest lease is 2 min; T1 of 10 s makes its clients renew often.
    sb.start_dnsmasq(lease="2m", extra=["--dhcp-option=option:T1,10", "--dhcp-option=option:T2,20"])
    script = sb.tmp / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    client = sb._spawn(
        "udhcpc",
        ["busybox", "udhcpc", "-f", "-i", "eth0", "-s", str(script), "-t", "5", "-T", "1"],
        netns=sb.node,
    )
    mac = _mac(sb, "eth0")
    # past the 120 s lease, with an agent restart in the middle
    before, after = _takeover_and_wait(sb, client, wait=130, restart_agent_after=45)
    assert "node:cni0: state=ADOPTED" in sb.agent_logs()
    finding = _node_lease_finding(sb)
    assert finding["ok"] and "kept by the agent" in finding["detail"], finding
    # a lease renewed at most T1 (10 s) ago, not one that ran out 10 s ago
    assert after["valid_life_time"] > 90, after
    rows = _dnsmasq_rows(sb, before["local"])
    assert rows and rows[-1]["mac"] == mac
    assert rows[-1]["client_id"].replace(":", "") == "01" + mac.replace(":", "")
    assert int(rows[-1]["expiry"]) > time.time() + 90, rows  # renewed by the keeper
    _check_restored(sb, client, before["local"])


def _dnsmasq_rows(sb: Sandbox, ip: str) -> list[dict[str, str]]:
    """dnsmasq's lease rows for ``ip``; dnsmasq rewrites its file in place (truncate, write)
    at every renewal, so a read may catch it empty: read again, briefly."""
    deadline = time.monotonic() + 3
    while True:
        rows = [r for r in parse_dnsmasq_leases(sb.dnsmasq_leases_path) if r["ip"] == ip]
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def _dhcpd_blocks(path: Path, ip: str) -> list[str]:
    return re.findall(rf"lease {re.escape(ip)} \{{(.*?)\n\}}", path.read_text(), re.S)


def test_dhclient_lease_from_dhcpd_kept_past_three_lease_times(sandbox: Sandbox) -> None:
    sb = sandbox
    _prepare_node(sb)
    sb.start_dhcpd(lease_seconds=30)
    script = sb.tmp / "dhclient.sh"
    script.write_text(DHCLIENT_SCRIPT)
    script.chmod(0o755)
    conf = sb.tmp / "dhclient.conf"
    conf.write_text(f'send dhcp-client-identifier "{CLIENT_ID}";\nrequest subnet-mask, routers;\n')
    leases = sb.tmp / "dhclient.leases"
    client = sb._spawn(
        "dhclient",
        ["dhclient", "-d", "-4", "-cf", str(conf), "-lf", str(leases),
         "-pf", str(sb.tmp / "dhclient.pid"), "-sf", str(script), "eth0"],
        netns=sb.node,
    )  # fmt: skip
    mac = _mac(sb, "eth0")
    first = _wait_for_address(sb, "eth0")
    ends_before = len(_dhcpd_blocks(sb.dhcpd_leases_path, first["local"]))
    finding = _node_lease_finding(sb)
    assert finding["ok"] and f"dhclient (pid {client.pid})" in finding["detail"], finding
    before, after = _takeover_and_wait(sb, client, wait=95)  # > 3 lease times of 30 s
    assert after["valid_life_time"] > 10, after
    blocks = _dhcpd_blocks(sb.dhcpd_leases_path, before["local"])
    assert len(blocks) >= ends_before + 4, "dhcpd recorded no renewals after the takeover"
    last = blocks[-1]
    assert f"hardware ethernet {mac}" in last and CLIENT_ID in last, last
    assert "binding state active" in last, last
    _check_restored(sb, client, before["local"])


@pytest.mark.parametrize("when", ["init-reboot", "renewal"])
def test_node_address_the_server_forgot_is_replaced(sandbox: Sandbox, when: str) -> None:
    """The server no longer has the node's lease. Restarted before the takeover with the
    node's address leased to another host, it NAKs the keeper's INIT-REBOOT; restarted
    after it with no leases and another range, it leaves the unknown lease's RENEW and
    REBIND unanswered (dhcpd) until it expires. Either way the node moves to a new
    address, with its default route, on the bridge, and new pods route via it."""
    sb = sandbox
    _prepare_node(sb)
    server = sb.start_dhcpd(lease_seconds=30)
    script = sb.tmp / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    sb._spawn(
        "udhcpc",
        ["busybox", "udhcpc", "-f", "-i", "eth0", "-s", str(script), "-t", "5", "-T", "1"],
        netns=sb.node,
    )
    old = _wait_for_address(sb, "eth0")["local"]
    other = ("192.168.77.150", "192.168.77.160")

    def switch_server() -> None:
        server.stop()
        if when == "init-reboot":
            # The node's address now leased to another host: a REQUEST for it is NAKed.
            sb.dhcpd_leases_path.write_text(
                f"lease {old} {{\n  starts 1 2026/01/05 00:00:00;\n"
                "  ends 3 2036/01/02 00:00:00;\n  binding state active;\n"
                "  next binding state free;\n  hardware ethernet 02:00:00:00:00:99;\n}\n"
            )
            sb.start_dhcpd(lease_seconds=30)
        else:
            config = dhcpd_config(lease_seconds=30, ranges=(other,))
            sb.start_dhcpd(config=config, fresh_leases=True)

    if when == "init-reboot":
        switch_server()
    sb.start_agent()
    add(sb, sb.add_pod("a"), conflist(sb))
    if when == "renewal":
        switch_server()
    deadline = time.monotonic() + 60  # T1 (15 s) + the rest of the lease, and some
    new = None
    while time.monotonic() < deadline:
        a = _addr(sb, "cni0")
        if a is not None and a["local"] != old:
            new = a
            break
        time.sleep(0.5)
    assert new is not None, "the node did not move to a new address:\n" + sb.agent_logs()[-3000:]
    if when == "renewal":
        assert 150 <= int(new["local"].rsplit(".", 1)[1]) <= 160
    logs = sb.agent_logs()
    assert "THE NODE'S ADDRESS CHANGES" in logs
    if when == "init-reboot":
        assert "INIT-REBOOT NAKed by" in logs
    routes = json.loads(run(["ip", "-j", "route", "show", "default"], netns=sb.node).stdout)
    assert any(r.get("gateway") == ROUTER_IP and r.get("dev") == "cni0" for r in routes), routes
    assert ping(sb.node, ROUTER_IP)
    # a pod added now routes via the node's new address
    late = sb.add_pod("late")
    add(sb, late, conflist(sb))
    pod_routes = run(["ip", "route"], netns=late.name).stdout
    assert f"default via {new['local']}" in pod_routes, pod_routes
    assert ping(late.name, ROUTER_IP)


def test_restore_gives_the_address_back_with_its_remaining_lifetime(sandbox: Sandbox) -> None:
    """``uplink restore`` moves a leased address back with the lifetime it has on the bridge
    now (the keeper's last renewal), not the one snapshotted at the takeover."""
    sb = sandbox
    node_ip = "192.168.77.10"
    run(["ip", "addr", "flush", "dev", "eth0"], netns=sb.node)
    run(["ip", "addr", "add", f"{node_ip}/24", "dev", "eth0",
         "valid_lft", "300", "preferred_lft", "300"], netns=sb.node)  # fmt: skip
    run(["ip", "route", "replace", "default", "via", ROUTER_IP], netns=sb.node)
    uplink_ok(sb, "ensure", "cni0", "eth0")
    assert (sb.state_dir / "node-dhcp.json").exists()
    # what a renewal does to the address on the bridge
    run(["ip", "addr", "change", f"{node_ip}/24", "dev", "cni0",
         "valid_lft", "1000", "preferred_lft", "1000"], netns=sb.node)  # fmt: skip
    uplink_ok(sb, "restore")
    back = _addr(sb, "eth0")
    assert back is not None and back["local"] == node_ip
    assert 900 < back["valid_life_time"] <= 1000, back
    assert not (sb.state_dir / "node-dhcp.json").exists()
