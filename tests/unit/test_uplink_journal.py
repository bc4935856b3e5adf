"""Uplink journal, lock, state round trips, wireless detection and fault injection (no root)."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from cni_bridge_dhcp.agent.uplink import (
    UplinkState,
    current_state,
    is_wireless,
    snapshot_differences,
)
from cni_bridge_dhcp.agent.uplink import journal as uj
from cni_bridge_dhcp.agent.uplink.plan import (
    AF_INET,
    AddrSnap,
    BridgePre,
    NeighSnap,
    RouteSnap,
    UplinkSnapshot,
)
from cni_bridge_dhcp.cni.errors import CNIError


def snapshot() -> UplinkSnapshot:
    return UplinkSnapshot(
        uplink="eth0",
        ifindex=2,
        mac="02:00:00:00:00:10",
        mtu=1500,
        up=True,
        addresses=(
            AddrSnap(AF_INET, "192.168.77.10", 24, flags=0x80, label="eth0"),
            AddrSnap(AF_INET, "192.168.77.11", 24, flags=0x81, label="eth0:1"),
        ),
        routes=(
            RouteSnap(AF_INET, gateway="192.168.77.1", dev="eth0"),
            RouteSnap(AF_INET, "10.9.0.0", 16, gateway="192.168.77.1", dev="eth0", priority=50),
            RouteSnap(AF_INET, "192.168.77.0", 24, proto=2, scope=253, dev="eth0"),
        ),
        neighbours=(NeighSnap(AF_INET, "192.168.77.5", "02:00:00:00:00:05"),),
        accept_ra="1",
        bridge_pre=BridgePre(
            ifindex=7, mac="02:00:00:00:00:77", mtu=1500, accept_ra="0", accept_dad="1"
        ),
        taken_at=1700000000.0,
    )


def test_journal_round_trip(tmp_path: Path) -> None:
    j = uj.Journal(
        bridge="cni0",
        uplink="eth0",
        spec="eth[0-9]",
        phase=uj.IN_PROGRESS,
        snapshot=snapshot(),
        steps=["snapshot", "bridge", "mac", "addr:0"],
    )
    uj.save(tmp_path, j)
    loaded = uj.load(tmp_path)
    assert loaded is not None
    assert loaded.snapshot == snapshot()
    assert loaded.steps == ["snapshot", "bridge", "mac", "addr:0"]
    assert (loaded.bridge, loaded.uplink, loaded.spec, loaded.phase) == (
        "cni0",
        "eth0",
        "eth[0-9]",
        uj.IN_PROGRESS,
    )
    assert loaded.belongs_here()
    # no temp file is left next to the journal
    assert sorted(p.name for p in tmp_path.iterdir()) == ["uplink.json"]


def test_a_bridge_snapshot_from_another_version_loads() -> None:
    """Older journals lack the bridge's accept_dad (nothing to give back then); a newer
    version's may record more than this one knows (ignored, not a crash at recovery)."""
    data = snapshot().to_dict()
    data["bridge_pre"] = {"ifindex": 7, "mac": "02:00:00:00:00:77", "mtu": 1500}
    assert UplinkSnapshot.from_dict(data).bridge_pre == BridgePre(7, "02:00:00:00:00:77", 1500)
    data["bridge_pre"] |= {"accept_dad": "2", "stp_state": 1}
    pre = UplinkSnapshot.from_dict(data).bridge_pre
    assert pre is not None and pre.accept_dad == "2"


def test_journal_from_another_boot_does_not_belong_here(tmp_path: Path) -> None:
    uj.save(tmp_path, uj.Journal("cni0", "eth0", "eth0", uj.DONE, snapshot()))
    data = json.loads((tmp_path / "uplink.json").read_text())
    data["boot_id"] = "00000000-0000-0000-0000-000000000000"
    (tmp_path / "uplink.json").write_text(json.dumps(data))
    loaded = uj.load(tmp_path)
    assert loaded is not None and not loaded.belongs_here()


def test_corrupt_journal_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "uplink.json").write_text('{"bridge": "cni0", "uplink"')
    assert uj.load(tmp_path) is None
    (tmp_path / "uplink.json").write_text('{"bridge": "cni0"}')
    assert uj.load(tmp_path) is None


def test_archive_moves_journal_aside(tmp_path: Path) -> None:
    uj.save(tmp_path, uj.Journal("cni0", "eth0", "eth0", uj.ROLLED_BACK, snapshot()))
    moved = uj.archive(tmp_path, "test")
    assert moved is not None and moved.exists()
    assert uj.load(tmp_path) is None
    assert uj.archive(tmp_path, "again") is None


def test_lock_times_out_with_code_11(tmp_path: Path) -> None:
    # flock belongs to the open file description: a second open in the same
    # process conflicts exactly like another process would.
    with (
        uj.locked(tmp_path, timeout=1.0),
        pytest.raises(CNIError) as err,
        uj.locked(tmp_path, timeout=0.1),
    ):
        pass
    assert err.value.code == 11
    assert "uplink.lock" in err.value.msg
    with uj.locked(tmp_path, timeout=0.1):  # released on exit
        pass


def test_lock_released_when_holder_dies(tmp_path: Path) -> None:
    code = (
        "import os, sys, fcntl; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
        "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True);"
        "os.kill(os.getpid(), 9)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "uplink.lock")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.stdout.strip() == "locked" and proc.returncode == -signal.SIGKILL
    with uj.locked(tmp_path, timeout=0.5):
        pass


def test_state_round_trip_and_current_state(tmp_path: Path) -> None:
    state = UplinkState(
        bridge="cni0",
        uplink="eth0",
        mac="02:00:00:00:00:10",
        addresses=(
            ipaddress.IPv4Interface("192.168.77.10/24"),
            ipaddress.IPv6Interface("2001:db8:77::10/64"),
        ),
        node_ipv4=ipaddress.IPv4Address("192.168.77.10"),
        gateway4=ipaddress.IPv4Address("192.168.77.1"),
        preconfigured=False,
    )
    assert UplinkState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    assert current_state(tmp_path) is None
    j = uj.Journal("cni0", "eth0", "eth0", uj.IN_PROGRESS, snapshot())
    uj.save(tmp_path, j)
    assert current_state(tmp_path) is None  # not done yet
    j.phase, j.state = uj.DONE, state.to_dict()
    uj.save(tmp_path, j)
    assert current_state(tmp_path) == state


def test_wireless_detection_with_fake_sysfs(tmp_path: Path) -> None:
    (tmp_path / "wlan0" / "wireless").mkdir(parents=True)
    (tmp_path / "wlp2s0" / "phy80211").mkdir(parents=True)
    (tmp_path / "eth0").mkdir()
    assert is_wireless("wlan0", tmp_path)
    assert is_wireless("wlp2s0", tmp_path)
    assert not is_wireless("eth0", tmp_path)
    assert not is_wireless("missing", tmp_path)


def test_snapshot_differences() -> None:
    snap = snapshot()
    assert snapshot_differences(snap, snap) == []
    # lifetimes tick and kernel routes come and go: neither is a difference
    aged = UplinkSnapshot.from_dict(
        {**snap.to_dict(), "routes": [asdict(r) for r in snap.routes[:2]]}
    )
    assert snapshot_differences(snap, aged) == []
    changed = UplinkSnapshot.from_dict(
        {**snap.to_dict(), "mac": "02:00:00:00:00:99", "routes": [asdict(snap.routes[0])]}
    )
    problems = snapshot_differences(snap, changed)
    assert any("MAC" in p for p in problems)
    assert any("10.9.0.0/16" in p and "missing" in p for p in problems)


def run_fault(point: str, env_value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CNI_BRIDGE_DHCP_FAULT"}
    if env_value is not None:
        env["CNI_BRIDGE_DHCP_FAULT"] = env_value
    code = (
        "import sys; from cni_bridge_dhcp.agent.runtime.faults import maybe_crash;"
        "maybe_crash(sys.argv[1]); print('survived')"
    )
    return subprocess.run(
        [sys.executable, "-c", code, point], capture_output=True, text=True, env=env, timeout=30
    )


def test_fault_injection_kills_at_named_point_only() -> None:
    assert run_fault("uplink:enslave", "uplink:enslave").returncode == -signal.SIGKILL
    assert run_fault("uplink:route:1", "add:veth, uplink:route:1").returncode == -signal.SIGKILL
    for point, env in [("uplink:route:1", "uplink:route:10"), ("uplink:mac", None)]:
        proc = run_fault(point, env)
        assert proc.returncode == 0 and proc.stdout.strip() == "survived"
