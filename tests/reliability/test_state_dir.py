"""The agent's state dir in trouble: full, read-only, or holding torn records.

The agent runs in a mount namespace of its own (``unshare -m --propagation slave``:
nothing mounted there reaches the host) where its state dir is a small tmpfs (full), or its
leases/ and attachments/ are bind mounts remounted read-only; the test reads that view
through ``/proc/<agent pid>/root``. Nothing is mounted anywhere else.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from testbed.sandbox import ROUTER_IP, Pod, Sandbox, parse_dnsmasq_leases, ping, run
from tests.e2e.helpers import NET, add, agent_report, conflist, container_id, links
from tests.reliability.lib import (
    agent_daemon,
    firewall_text,
    in_agent_mounts,
    journal_by_key,
    kill_agent,
    lease_key,
    start_agent_in_mount_ns,
    veths,
    wait_for,
)
from tests.unit.test_dhcp_lease import sample_lease

STATE_FAILED = 105


def agent_view(sb: Sandbox) -> Path:
    """The state dir as the agent sees it (inside its mount namespace)."""
    return Path(f"/proc/{agent_daemon(sb).pid}/root{sb.state_dir}")


def files_in(state: Path) -> list[str]:
    found: list[str] = []
    for sub in ("leases", "attachments"):
        d = state / sub
        if d.is_dir():
            found += [f"{sub}/{p.name}" for p in sorted(d.iterdir())]
    return found


def error_code(proc: Any) -> int | None:
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    for line in reversed(lines):
        try:
            code = json.loads(line).get("code")
        except (ValueError, AttributeError):
            continue
        return int(code) if code is not None else None
    return None


class Steady:
    """The node with one resident pod: what a failed ADD must leave exactly as it was."""

    def __init__(self, sb: Sandbox, state: Path) -> None:
        self.sb = sb
        self.state = state
        self.veths = veths(sb.node)
        self.firewall = firewall_text(sb.node)
        self.files = files_in(state)
        self.leases = {(r["mac"], r["ip"]) for r in parse_dnsmasq_leases(sb.dnsmasq_leases_path)}

    def left_behind(self, pod: Pod) -> list[str]:
        sb = self.sb
        found = []
        if links(pod.name) != ["lo"]:
            found.append(f"pod links {links(pod.name)}")
        if veths(sb.node) != self.veths:
            found.append(f"host veths {veths(sb.node)}")
        if firewall_text(sb.node) != self.firewall:
            found.append("firewall rules changed")
        if files_in(self.state) != self.files:
            found.append(f"state files {files_in(self.state)}")

        def leases() -> set[tuple[str, str]]:
            return {(r["mac"], r["ip"]) for r in parse_dnsmasq_leases(sb.dnsmasq_leases_path)}

        # a RELEASE reaches dnsmasq's lease file a moment after the reply
        deadline = time.monotonic() + 5
        while leases() != self.leases and time.monotonic() < deadline:
            time.sleep(0.2)
        if leases() != self.leases:
            found.append(f"server leases {leases() - self.leases}")
        return found


@pytest.mark.scenario("state-disk-full")
def test_full_state_dir_fails_add_cleanly_at_every_write(
    sandbox: Sandbox, figures: dict[str, Any]
) -> None:
    sb = sandbox
    sb.start_dnsmasq()
    start_agent_in_mount_ns(sb, f"mount -t tmpfs -o size=1m,mode=0700 cbd-state {sb.state_dir}")
    state = agent_view(sb)
    assert in_agent_mounts(sb, f"findmnt -n -o FSTYPE {sb.state_dir}").strip() == "tmpfs"
    conf = conflist(sb)
    resident = sb.add_pod("resident")
    add(sb, resident, conf)
    steady = Steady(sb, state)
    filler = state / "filler"
    codes: dict[int, int | None] = {}
    failed_at: list[str] = []
    for free_pages in range(4):
        st = os.statvfs(state)
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, max(0, st.f_bavail - free_pages) * st.f_frsize)
        finally:
            os.close(fd)
        pod = sb.add_pod(f"full{free_pages}")
        proc = sb.cnitool("add", NET, pod, conflist=conf, check=False)
        codes[free_pages] = error_code(proc) if proc.returncode else 0
        if proc.returncode == 0:
            # enough room after all: the pod must then be complete
            assert ping(pod.name, ROUTER_IP)
            sb.cnitool("del", NET, pod, conflist=conf)
        else:
            text = proc.stdout + proc.stderr
            assert codes[free_pages] == STATE_FAILED, text
            assert "No space left" in text and str(sb.state_dir) in text, text
            where = "attachment record" if "/attachments/" in text else "lease journal"
            assert where == "attachment record" or "/leases/" in text, text
            failed_at.append(where)
        assert steady.left_behind(pod) == [], f"{free_pages} free pages"
        filler.unlink()
        again = sb.add_pod(f"after{free_pages}")
        add(sb, again, conf)  # space is back: ADD works
        sb.cnitool("del", NET, again, conflist=conf)
    assert sum(1 for c in codes.values() if c == STATE_FAILED) >= 3, codes
    assert set(failed_at) == {"attachment record", "lease journal"}, failed_at
    assert agent_daemon(sb).alive()
    assert ping(resident.name, ROUTER_IP)
    figures["free pages tried (0-3) -> code"] = ", ".join(f"{k}:{v}" for k, v in codes.items())
    figures["writes that failed"] = ", ".join(failed_at)
    figures["half-made pods found"] = 0


@pytest.mark.scenario("state-readonly")
def test_read_only_state_dir_fails_add_cleanly_and_del_completes_later(
    sandbox: Sandbox, figures: dict[str, Any]
) -> None:
    sb = sandbox
    sb.start_dnsmasq()
    # The records live in leases/ and attachments/; each is a bind mount of its own so it can
    # go read-only while the agent runs (its lock file, open for writing, pins the root).
    subdirs = " ".join(str(sb.state_dir / d) for d in ("leases", "attachments"))
    start_agent_in_mount_ns(
        sb, f"for d in {subdirs}; do mkdir -p -m 0700 $d; mount --bind $d $d; done"
    )
    state = agent_view(sb)
    conf = conflist(sb)
    resident = sb.add_pod("resident")
    add(sb, resident, conf)
    steady = Steady(sb, state)

    in_agent_mounts(sb, f"for d in {subdirs}; do mount -o remount,bind,ro $d; done")
    pod = sb.add_pod("ro")
    proc = sb.cnitool("add", NET, pod, conflist=conf, check=False)
    assert proc.returncode != 0
    add_code = error_code(proc)
    assert add_code == STATE_FAILED, proc.stdout + proc.stderr
    assert "Read-only file system" in proc.stdout + proc.stderr
    assert str(sb.state_dir) in proc.stdout + proc.stderr
    assert steady.left_behind(pod) == []

    # DEL of the resident pod cannot complete its records: it must say so, and finish
    # once the state dir is writable again.
    failed_del = sb.cnitool("del", NET, resident, conflist=conf, check=False)
    del_code = error_code(failed_del) if failed_del.returncode else 0
    assert del_code == STATE_FAILED, failed_del.stdout + failed_del.stderr
    assert "Read-only file system" in failed_del.stdout + failed_del.stderr
    assert str(sb.state_dir / "leases") in failed_del.stdout + failed_del.stderr
    in_agent_mounts(sb, f"for d in {subdirs}; do mount -o remount,bind,rw $d; done")
    sb.cnitool("del", NET, resident, conflist=conf)
    assert files_in(state) == []
    assert [n for n in veths(sb.node)] == []
    wait_for(lambda: parse_dnsmasq_leases(sb.dnsmasq_leases_path) == [], 5, "release")
    assert agent_report(sb)["pods"] == []
    add(sb, pod, conf)
    assert ping(pod.name, ROUTER_IP)
    figures["ADD code on a read-only state dir"] = add_code
    figures["DEL code on a read-only state dir"] = del_code
    figures["half-made pods found"] = 0


@pytest.mark.scenario("journal-torn")
def test_torn_records_are_detected_and_ignored_at_start(
    sandbox: Sandbox, figures: dict[str, Any]
) -> None:
    sb = sandbox
    sb.start_dnsmasq()
    sb.start_agent()
    conf = conflist(sb)
    torn_lease, torn_att, intact = (sb.add_pod(n) for n in ("tornlease", "tornatt", "intact"))
    for pod in (torn_lease, torn_att, intact):
        add(sb, pod, conf)
    kill_agent(sb)

    lease_dir = sb.state_dir / "leases"
    att_dir = sb.state_dir / "attachments"
    lease_file = next(
        p
        for p in lease_dir.glob("*.json")
        if json.loads(p.read_text())["key"] == lease_key(torn_lease)
    )
    att_file = next(
        p for p in att_dir.glob("*.json") if json.loads(p.read_text())["netns"] == torn_att.path
    )
    for path in (lease_file, att_file):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    (lease_dir / ".deadbeef.123.0.tmp").write_bytes(b'{"version": 1, "ke')
    (att_dir / "0000.json").write_bytes(b"")

    sb.start_agent()
    logs = sb.agent_logs()
    assert "ignoring corrupt record" in logs
    assert "ignoring corrupt state file" in logs
    assert "Traceback" not in sb.agent_stderr()
    assert (lease_dir / (lease_file.name + ".corrupt")).exists()
    assert not (lease_dir / ".deadbeef.123.0.tmp").exists()
    keys = set(journal_by_key(sb))
    assert lease_key(intact) in keys and lease_key(torn_att) in keys
    pods = {p["containerId"]: p for p in agent_report(sb)["pods"]}
    # the torn attachment is not listed
    assert set(pods) == {container_id(torn_lease), container_id(intact)}, set(pods)
    unreleasable = pods[container_id(torn_lease)]["ips"][0].split("/")[0]
    assert ping(intact.name, ROUTER_IP)

    # The agent keeps working: DEL of all three (the torn one without its record) leaves
    # nothing, then a new ADD.
    for pod in (torn_lease, torn_att, intact):
        sb.cnitool("del", NET, pod, conflist=conf)
    assert veths(sb.node) == []
    assert journal_by_key(sb) == {}
    # Without its lease record the torn pod's lease cannot be released: it stays at the
    # server until it expires. The other two are released.
    wait_for(
        lambda: [r["ip"] for r in parse_dnsmasq_leases(sb.dnsmasq_leases_path)] == [unreleasable],
        5,
        "the releases",
    )
    run(["ip", "netns", "delete", torn_att.name])  # the runtime removes the sandbox
    fresh = sb.add_pod("fresh")
    add(sb, fresh, conf)
    assert ping(fresh.name, ROUTER_IP)
    figures["torn records"] = 2
    figures["stray temporaries / empty records"] = 2
    figures["agent crashes"] = 0


@pytest.mark.scenario("journal-torn")
def test_a_record_torn_at_any_byte_is_ignored_and_never_breaks_loading(
    tmp_path: Path, figures: dict[str, Any]
) -> None:
    """Every possible torn write of a lease record and an attachment record (truncation
    at each byte): loading skips it and keeps the intact neighbour."""
    from cni_bridge_dhcp.agent.dhcp.journal import Journal
    from cni_bridge_dhcp.agent.state.attachments import Attachment, AttachmentStore

    state = tmp_path / "state"
    journal = Journal(state)
    # every optional field set, so the record is as long (and as tearable) as they get
    lease = sample_lease(
        key="lan/cid-1/eth0",
        server_allow_list=(IPv4Address(ROUTER_IP),),
        arp_probe_wait=0.5,
        broadcast_flag=True,
    )
    journal.write(lease)
    neighbour = dataclasses.replace(lease, key="lan/cid-2/eth0")
    journal.write(neighbour)
    path = journal.path_for(lease.key)
    body = path.read_bytes()
    store = AttachmentStore(state)
    att = Attachment("lan", "cid-1", "eth0", "/run/netns/x", 1, "cni0", "veth0", "ready")
    store.put(att)
    store.put(Attachment("lan", "cid-2", "eth0", "/run/netns/y", 2, "cni0", "veth1", "ready"))
    att_path = next(p for p in store.dir.glob("*.json") if b"cid-1" in p.read_bytes())
    att_body = att_path.read_bytes()
    tried = 0
    for cut in range(len(body.rstrip())):
        path.write_bytes(body[:cut])
        loaded = journal.load()
        assert [x.key for x in loaded] == [neighbour.key], cut
        Path(str(path) + ".corrupt").unlink()
        tried += 1
    for cut in range(len(att_body.rstrip())):
        att_path.write_bytes(att_body[:cut])
        assert [a.container_id for a in store.all()] == ["cid-2"], cut
        tried += 1
    figures["torn variants loaded (every truncation point)"] = tried
