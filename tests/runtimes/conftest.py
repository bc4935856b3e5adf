"""Fixtures of the runtimes layer: a LAN with dnsmasq, the agent in the node, real runtimes.

The runtimes (containerd, podman) come from Debian packages installed by scripts/install-deps;
a missing one fails the test (it is a declared dependency), it is never skipped.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.sandbox import Sandbox, run
from tests.e2e.helpers import NET, conflist
from tests.runtimes.cri import Containerd
from tests.runtimes.daemonset import build_daemonset_image
from tests.runtimes.images import Image, build_images
from tests.runtimes.mounts import leaked_mounts, mount_targets
from tests.runtimes.podman import Podman

# reference plugins the runtimes call besides ours: containerd sets up the pod's lo with
# loopback; portmap and macvlan are chained/used by the scenarios
REFERENCE_PLUGINS = ("loopback", "portmap", "macvlan")
REFERENCE_DIR = Path("/usr/lib/cni")


def wait_for_ra_default(netns: str, dev: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    cmd = ["ip", "-6", "route", "show", "default", "dev", dev]
    while not run(cmd, netns=netns).stdout.strip():
        if time.monotonic() > deadline:
            pytest.fail(f"no IPv6 default route from the LAN's RAs on {dev} in {netns}")
        time.sleep(0.2)


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not installed: run ./scripts/install-deps", pytrace=False
        )


@pytest.fixture(scope="session")
def images() -> tuple[Image, Image]:
    """(pause, busybox) OCI archives, built once per session under build/runtimes."""
    require("gcc", "dpkg-deb")
    return build_images()


def runtime_conflist(sb: Sandbox, *, portmap: bool = True, **plugin: Any) -> dict[str, Any]:
    """Our plugin (agent in the node), portmap chained after it as a user would write it."""
    conf = conflist(sb, **plugin)
    if portmap:
        conf["plugins"].append({"type": "portmap", "capabilities": {"portMappings": True}})
    return conf


@pytest.fixture
def node(sandbox: Sandbox, request: pytest.FixtureRequest) -> Sandbox:
    """dnsmasq on the LAN, the agent in the node, a private CNI bin dir with our plugin and
    the reference plugins the runtimes need, and our conflist in a private conf dir.

    Parametrized indirectly with "dual-stack", the LAN also announces IPv6 (dnsmasq RAs)
    and the node has learned it on its uplink before the agent starts, as a real node would.
    """
    dual_stack = getattr(request, "param", None) == "dual-stack"
    sandbox.start_dnsmasq(ipv6_ra=dual_stack)
    if dual_stack:
        wait_for_ra_default(sandbox.node, "eth0")
    sandbox.start_agent()
    sandbox.plugin_wrapper()
    for name in REFERENCE_PLUGINS:
        (sandbox.cni_bin_dir / name).symlink_to(REFERENCE_DIR / name)
    sandbox.write_conflist(NET, runtime_conflist(sandbox))
    return sandbox


@pytest.fixture
def containerd(node: Sandbox, images: tuple[Image, Image]) -> Iterator[Containerd]:
    require("containerd", "ctr", "runc", "containerd-shim-runc-v2")
    mounts_before = mount_targets()
    runtime = Containerd(node, bin_dir=node.cni_bin_dir, conf_dir=node.netconf_dir)
    try:
        runtime.start()
        for image in images:
            runtime.import_image(image)
        yield runtime
    finally:
        runtime.stop()
        leaks = leaked_mounts(mounts_before, [runtime.dir, node.tmp])
        runtime.remove_dir()
    assert not leaks, f"containerd left mounts behind (now unmounted): {leaks}"


@pytest.fixture
def podman(node: Sandbox, images: tuple[Image, Image]) -> Iterator[Podman]:
    require("podman", "runc", "conmon")
    mounts_before = mount_targets()
    runtime = Podman(node, plugin_dirs=[node.cni_bin_dir])
    try:
        for image in images:
            runtime.load(image)
        yield runtime
    finally:
        runtime.stop()
        leaks = leaked_mounts(mounts_before, [runtime.dir, node.tmp])
        runtime.remove_dir()
    assert not leaks, f"podman left mounts behind (now unmounted): {leaks}"


@pytest.fixture(scope="session")
def daemonset_image() -> Image:
    """The DaemonSet image, built by make image with the local base (once per session)."""
    require("podman", "mmdebstrap")
    return build_daemonset_image()


@pytest.fixture
def lan_only(sandbox: Sandbox) -> Sandbox:
    """dnsmasq on the LAN; the node runs no agent (the DaemonSet container brings it)."""
    sandbox.start_dnsmasq()
    return sandbox


@pytest.fixture
def ds_podman(lan_only: Sandbox, daemonset_image: Image) -> Iterator[Podman]:
    mounts_before = mount_targets()
    lan_only.cni_bin_dir.mkdir(parents=True, exist_ok=True)  # podman checks its plugin dirs
    runtime = Podman(lan_only, plugin_dirs=[lan_only.cni_bin_dir])
    try:
        runtime.load(daemonset_image)
        yield runtime
    finally:
        runtime.stop()
        leaks = leaked_mounts(mounts_before, [runtime.dir, lan_only.tmp])
        runtime.remove_dir()
    assert not leaks, f"podman left mounts behind (now unmounted): {leaks}"
