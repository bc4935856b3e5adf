"""Runtimes in the node's network namespace and the machine's mount namespace.

``ip netns exec`` gives its command a private mount namespace with /sys remounted for the
target network namespace: that hides /sys/fs/cgroup (runc then fails with "no cgroup mount
found in mountinfo"), and the pod netns bind mounts a runtime makes under /run/netns in
such a namespace are invisible to the agent, which then cannot send DHCPRELEASE from the pod
("netns ... is gone"). On a real node the runtime, the plugin and the agent share the host's
mount namespace, so the runtimes here are started with ``nsenter --net`` only: the node's
network, the machine's mounts. Their mounts (snapshots under the test's private root, pod
netns under /run/netns, shm) therefore appear in the machine's mount table until the runtime
removes them; tests/runtimes/mounts.py checks that none is left behind.
"""

from __future__ import annotations

from pathlib import Path

from testbed.sandbox import NETNS_DIR, Daemon, Sandbox

# The PATH a node's runtime runs with (systemd's), not this shell's: a pyenv shim first on
# PATH would make every `#!/usr/bin/env python3` plugin exec a shell script (+150 ms).
NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def node_cmd(sb: Sandbox, cmd: list[str], *, node: str | None = None) -> list[str]:
    """``cmd`` in ``node`` (default: the sandbox's node namespace)."""
    netns = NETNS_DIR / (node or sb.node)
    return ["nsenter", f"--net={netns}", "--", *cmd]


def spawn_in_node(
    sb: Sandbox,
    name: str,
    cmd: list[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    node: str | None = None,
) -> Daemon:
    """A daemon in ``node`` (default ``sb.node``; own session, stopped by pid at sandbox
    teardown), with the node's PATH and the machine's mounts."""
    netns = node or sb.node
    return sb._spawn(
        name,
        cmd,
        netns=netns,
        log_path=log_path,
        env={"PATH": NODE_PATH, **(env or {})},
        launcher=node_cmd(sb, [], node=netns),
    )
