"""The agent on a state dir holding bad or foreign records (issue 12, item 8).

Records of valid JSON but the wrong shape are set aside and never stop the agent or the
upkeep of the other pods; a record planted by another user is never acted on; a state
dir that others can write to is refused with the fix in the message.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from testbed.sandbox import ROUTER_IP, Sandbox, SandboxError, ping, run
from tests.e2e.helpers import NET, add, conflist, container_id
from tests.reliability.lib import kill_agent, wait_for


def _record_of(sb: Sandbox, cid: str) -> Path:
    return next(
        p
        for p in (sb.state_dir / "attachments").glob("*.json")
        if json.loads(p.read_text())["container_id"] == cid
    )


def _flush_firewall(sb: Sandbox) -> None:
    """Every rule anyone made in the node, then a FORWARD policy of DROP: only re-asserted
    pod rules let a pod's traffic through the bridge again."""
    run(["nft", "flush", "ruleset"], netns=sb.node)
    for table in ("filter", "nat"):
        run(["iptables-legacy", "-t", table, "-F"], netns=sb.node)
        run(["iptables-legacy", "-t", table, "-X"], netns=sb.node)
    run(["iptables-nft", "-P", "FORWARD", "DROP"], netns=sb.node)


def test_bad_shape_records_never_stop_the_agent_or_the_good_pods_upkeep(
    sandbox: Sandbox,
) -> None:
    sb = sandbox
    run(["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"], netns=sb.node)
    sb.start_dnsmasq()
    sb.start_agent(extra_args=["--firewall-interval", "1"])
    conf = conflist(sb)
    good, bad = sb.add_pod("good"), sb.add_pod("bad")
    add(sb, good, conf)
    add(sb, bad, conf)
    assert ping(good.name, ROUTER_IP)
    kill_agent(sb)

    bad_record = _record_of(sb, container_id(bad))
    data = json.loads(bad_record.read_text())
    bad_record.write_text(json.dumps({**data, "ips": ["not-an-address"]}))
    (sb.state_dir / "addressbook.json").write_text('{"entries": []}')
    (sb.state_dir / "leases" / "0000.json").write_text('{"version": 1, "key": 5}')
    # A pending record planted by another user: at start the agent would tear the
    # "interrupted ADD" down by exec'ing the delegated IPAM plugin the record names.
    marker = sb.tmp / "planted-ran"
    evil_dir = sb.tmp / "evil"
    evil_dir.mkdir()
    (evil_dir / "evil").write_text(f"#!/bin/sh\ntouch {marker}\necho '{{}}'\n")
    (evil_dir / "evil").chmod(0o755)
    planted = sb.state_dir / "attachments" / ("ab" * 16 + ".json")
    planted.write_text(
        json.dumps(
            {**data, "container_id": "planted", "state": "pending", "ipam": "evil",
             "result": {"delegate": {"conf": {"ipam": {"type": "evil"}},
                                     "cniPath": str(evil_dir), "cniArgs": ""}}}
        )
    )  # fmt: skip
    os.chown(planted, 65534, 65534)
    _flush_firewall(sb)
    assert not ping(good.name, ROUTER_IP, wait=1)

    sb.start_agent(extra_args=["--firewall-interval", "1"])
    wait_for(lambda: ping(good.name, ROUTER_IP, wait=1), 15, "the good pod's rules re-asserted")
    logs = sb.agent_logs()
    assert "Traceback" not in sb.agent_stderr()
    assert f"state file {bad_record} is corrupt" in logs and "ips[0]" in logs
    assert "addressbook.json is corrupt" in logs and "'entries'" in logs
    assert bad_record.with_name(bad_record.name + ".corrupt").exists()
    assert (sb.state_dir / "addressbook.json.corrupt").exists()
    assert (sb.state_dir / "leases" / "0000.json.corrupt").exists()
    assert f"skipping state file {planted}: owned by uid 65534" in logs
    assert not marker.exists(), "the agent ran a binary named by another user's record"
    assert planted.exists()
    # the agent keeps serving: a new pod, and DEL of the good one
    fresh = sb.add_pod("fresh")
    add(sb, fresh, conf)
    assert ping(fresh.name, ROUTER_IP)
    sb.cnitool("del", NET, good, conflist=conf)


@pytest.mark.parametrize("mode", [0o777, 0o775])
def test_state_dir_writable_by_others_is_refused(sandbox: Sandbox, mode: int) -> None:
    sb = sandbox
    sb.state_dir.mkdir(parents=True)
    os.chmod(sb.state_dir, mode)
    with pytest.raises(SandboxError):
        sb.start_agent()
    err = sb.agent_stderr()
    assert f"refusing state dir {sb.state_dir}" in err
    assert f"chmod 0700 {sb.state_dir}" in err
    assert "Traceback" not in err
    os.chmod(sb.state_dir, 0o700)
    sb.start_agent()


def test_agent_creates_its_state_dir_private(sandbox: Sandbox) -> None:
    sb = sandbox
    state = sb.tmp / "fresh" / "state"
    sock = sb.agent_socket.with_name("fresh.sock")
    cmd = [sys.executable, "-m", "cni_bridge_dhcp", "daemon", "--socket", str(sock),
           "--state-dir", str(state), "--firewall-interval", "0"]  # fmt: skip
    agent = sb._spawn("agent-fresh", cmd, netns=sb.node)
    wait_for(sock.exists, 20, "the agent's socket")
    assert (state.stat().st_mode & 0o777) == 0o700
    assert ((state / "attachments").stat().st_mode & 0o777) == 0o700
    agent.stop()


def test_unreadable_uplink_journal_is_kept_and_never_acted_on(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.start_dnsmasq()
    sb.start_agent()
    conf = conflist(sb)
    first = sb.add_pod("first")
    add(sb, first, conf)
    kill_agent(sb)
    path = sb.state_dir / "uplink.json"
    data = json.loads(path.read_text())
    data["snapshot"]["addresses"] = "192.168.77.10/24"
    body = json.dumps(data)
    path.write_text(body)

    sb.start_agent()  # starts: recovery does nothing with it, and says so loudly
    logs = sb.agent_logs()
    assert f"UPLINK JOURNAL {path} IS UNREADABLE" in logs and "snapshot.addresses" in logs
    second = sb.add_pod("second")
    proc = sb.cnitool("add", NET, second, conflist=conf, check=False)
    err = json.loads(proc.stdout or proc.stderr)
    assert err["code"] == 102 and str(path) in err["msg"], err
    assert "snapshot.addresses" in err["msg"]
    assert path.read_text() == body  # neither replaced nor archived
    assert not list(sb.state_dir.glob("uplink.json.*.old"))
    assert ping(first.name, ROUTER_IP)  # the node and its pods keep working
    assert ping(sb.node, ROUTER_IP)
    restore = [sys.executable, "-m", "cni_bridge_dhcp", "uplink", "restore", "--force",
               "--state-dir", str(sb.state_dir)]  # fmt: skip
    refused = run(restore, netns=sb.node, check=False)
    assert refused.returncode != 0 and str(path) in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr
    assert path.read_text() == body
    doctor = [sys.executable, "-m", "cni_bridge_dhcp", "doctor", "--json", "--socket",
              str(sb.agent_socket), "--state-dir", str(sb.state_dir), "--uplink", "eth0",
              "--bridge", "cni0"]  # fmt: skip
    report = run(doctor, netns=sb.node, check=False).stdout
    assert '"check": "uplink journal"' in report and str(path) in report, report[-3000:]
