"""The DaemonSet image, built by make image (local base), run as the DaemonSet describes:
its install step puts plugin and conflist in the node's dirs, containerd's CRI starts pods
through them, a SIGTERM (DaemonSet update) leaves pods alone, the next container re-adopts
them, and a bad configmap value stops it before anything is written."""

from __future__ import annotations

import json
import sys
from typing import Any

from testbed.sandbox import ROUTER_IP, Sandbox, parse_dnsmasq_leases, run
from tests.runtimes.cri import Containerd
from tests.runtimes.daemonset import DaemonSetPod
from tests.runtimes.images import Image, build_images
from tests.runtimes.mounts import leaked_mounts, mount_targets
from tests.runtimes.podman import Podman


def leased(sb: Sandbox) -> set[str]:
    return {lease["ip"] for lease in parse_dnsmasq_leases(sb.dnsmasq_leases_path)}


def report(sb: Sandbox, ds: DaemonSetPod) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "cni_bridge_dhcp", "status", "--json", "--socket", str(ds.socket)]
    out: dict[str, Any] = json.loads(run(cmd, netns=sb.node).stdout)
    return out


def test_daemonset_installs_pods_survive_sigterm_and_are_readopted(
    lan_only: Sandbox, ds_podman: Podman, daemonset_image: Image
) -> None:
    sb = lan_only
    ds = DaemonSetPod(sb, ds_podman, daemonset_image)
    ds.start()
    conflists = sorted(p.name for p in ds.conf_dir.glob("*.conflist"))
    assert conflists == ["10-cni-bridge-dhcp.conflist"], ds.logs()
    conf = json.loads((ds.conf_dir / conflists[0]).read_text())
    assert [p["type"] for p in conf["plugins"]] == ["cni-bridge-dhcp", "portmap"]
    assert (ds.bin_dir / "cni-bridge-dhcp").stat().st_mode & 0o111

    pause, _busybox = build_images()
    mounts_before = mount_targets()
    ctrd = Containerd(sb, bin_dir=ds.bin_dir, conf_dir=ds.conf_dir)
    try:
        ctrd.start()
        ctrd.import_image(pause)
        pod = ctrd.run_pod(ctrd.sandbox_config("db-0", namespace="data"))
        assert pod.ip in leased(sb)
        assert [p["containerId"] for p in report(sb, ds)["pods"]] == [pod.id]

        # a DaemonSet update: SIGTERM the container; the pod keeps address, lease, datapath
        ds.sigterm()
        addr = ctrd.pod_run(pod, ["ip", "-4", "-o", "addr", "show", "eth0"]).stdout
        assert f"inet {pod.ip}/24" in addr
        assert pod.ip in leased(sb)
        ping = ctrd.pod_run(pod, ["busybox", "ping", "-c", "1", "-W", "2", ROUTER_IP], check=False)
        assert ping.returncode == 0

        # the next container re-adopts the pod from the state dir and serves its DEL
        ds.restart()
        pods = report(sb, ds)["pods"]
        assert [p["containerId"] for p in pods] == [pod.id], ds.logs()
        assert pods[0]["lease"]["address"].split("/")[0] == pod.ip
        ctrd.stop_pod(pod.id)
        assert pod.ip not in leased(sb), ds.logs()
        ctrd.remove_pod(pod.id)
    finally:
        ctrd.stop()
        leaks = leaked_mounts(mounts_before, [ctrd.dir])
        ctrd.remove_dir()
    assert not leaks, f"containerd left mounts behind (now unmounted): {leaks}"


def test_bad_configmap_value_stops_the_container_before_anything_is_written(
    lan_only: Sandbox, ds_podman: Podman, daemonset_image: Image
) -> None:
    ds = DaemonSetPod(lan_only, ds_podman, daemonset_image)
    before = sorted(p.name for p in ds.bin_dir.iterdir())
    proc = ds_podman(
        "run", "--rm", *ds.run_args(ds.env(DEFAULT_ROUTE="sideways")), daemonset_image.ref,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "DEFAULT_ROUTE" in proc.stderr and "nothing was written" in proc.stderr
    assert list(ds.conf_dir.iterdir()) == []
    assert sorted(p.name for p in ds.bin_dir.iterdir()) == before
    assert not ds.socket.exists()


def add_node(sb: Sandbox, suffix: str, address: str) -> str:
    """Another node namespace on the sandbox's LAN (eth0 = ``address``/24, default via the
    router), created and deleted by the sandbox like its own."""
    name = f"{sb.prefix}-{suffix}"
    sb._add_netns(name)
    peer = f"n{suffix}"[:15]
    run(
        [
            "ip",
            "-n",
            sb.lan,
            "link",
            "add",
            peer,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            name,
        ]
    )
    run(["ip", "-n", sb.lan, "link", "set", peer, "master", "lan0", "up"])
    run(["ip", "-n", name, "link", "set", "lo", "up"])
    run(["ip", "-n", name, "addr", "add", f"{address}/24", "dev", "eth0"])
    run(["ip", "-n", name, "link", "set", "eth0", "up"])
    run(["ip", "-n", name, "route", "add", "default", "via", ROUTER_IP])
    return name


def test_two_nodes_pods_reach_each_other_and_a_statefulset_pod_moves(
    lan_only: Sandbox, ds_podman: Podman, daemonset_image: Image
) -> None:
    sb = lan_only
    node_b = add_node(sb, "nodeb", "192.168.77.11")
    ds_a = DaemonSetPod(sb, ds_podman, daemonset_image)
    ds_b = DaemonSetPod(sb, ds_podman, daemonset_image, node=node_b)
    ds_a.start()
    ds_b.start()
    pause, _busybox = build_images()
    mounts_before = mount_targets()
    runtimes: list[Containerd] = []
    try:
        for ds in (ds_a, ds_b):
            ctrd = Containerd(sb, bin_dir=ds.bin_dir, conf_dir=ds.conf_dir, node=ds.node)
            runtimes.append(ctrd)
            ctrd.start()
            ctrd.import_image(pause)
        on_a, on_b = runtimes
        web_a = on_a.run_pod(on_a.sandbox_config("web-a"))
        web_b = on_b.run_pod(on_b.sandbox_config("web-b"))
        for src, ctrd, dst in ((web_a, on_a, web_b), (web_b, on_b, web_a)):
            cmd = ["busybox", "ping", "-c", "1", "-W", "2", dst.ip]
            assert ctrd.pod_run(src, cmd, check=False).returncode == 0, (src.ip, dst.ip)

        # a StatefulSet pod: deleted on A, re-created on B (same namespace/name, new uid)
        first = on_a.run_pod(on_a.sandbox_config("db-0", namespace="data"))
        on_a.stop_pod(first.id)
        on_a.remove_pod(first.id)
        assert first.ip not in leased(sb)
        again = on_b.run_pod(on_b.sandbox_config("db-0", namespace="data"))
        assert again.ip in leased(sb)
        cmd = ["busybox", "ping", "-c", "1", "-W", "2", again.ip]
        assert on_a.pod_run(web_a, cmd, check=False).returncode == 0
        moved = again.ip == first.ip
    finally:
        for ctrd in runtimes:
            ctrd.stop()
        leaks = leaked_mounts(mounts_before, [c.dir for c in runtimes])
        for ctrd in runtimes:
            ctrd.remove_dir()
    assert not leaks, f"containerd left mounts behind (now unmounted): {leaks}"
    # The configmap's STABLE_MAC derives the pod's MAC from namespace/name, so node B's pod
    # has the MAC of node A's and the server gives it the same address (node B's address book
    # knows nothing of node A's pods; without STABLE_MAC dnsmasq picked another address).
    assert moved, f"StatefulSet pod moved A->B got {again.ip}, not {first.ip}"
