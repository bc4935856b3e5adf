"""Bad and hostile CNI input through the real plugin executable (the zipapp admins install),
and straight at the agent's socket: each answered with the right code, nothing changed.

After every input the node namespace (links, addresses, routes, rules, iptables legacy and
nft, nft ruleset, sysctls), the target pod namespace, the agent's state dir and the DHCP
server's leases are compared with the snapshot taken before that input.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cni_bridge_dhcp.cni import agent_client as client
from cni_bridge_dhcp.cni.wire import HEADER, make_request
from testbed.sandbox import REPO_ROOT, Pod, Sandbox, diff_snapshots, parse_dnsmasq_leases
from tests.e2e.helpers import add, conflist
from tests.reliability.lib import agent_daemon, netns_snapshot, state_files

INVALID_ENV, DECODE, VERSION, CONFIG, UNSUPPORTED = 4, 6, 1, 7, 2


@dataclass(frozen=True)
class Case:
    name: str
    code: int
    env: dict[str, str | None] = field(default_factory=dict)  # None removes the variable
    config: dict[str, Any] | None = None  # merged over the valid plugin config
    stdin: bytes | None = None  # replaces stdin entirely


def plugin_config(sb: Sandbox) -> dict[str, Any]:
    conf: dict[str, Any] = conflist(sb)["plugins"][0]
    return {"cniVersion": "1.0.0", "name": "lan", **conf}


def cases(paths: dict[str, str]) -> list[Case]:
    big = json.dumps({"cniVersion": "1.0.0", "name": "lan", "pad": "x" * (1 << 20)}).encode()
    deep = b'{"cniVersion":"1.0.0","name":"lan","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return [
        # stdin
        Case("malformed JSON", DECODE, stdin=b'{"cniVersion": "1.0.0", "name": '),
        Case("JSON array instead of object", DECODE, stdin=b"[1, 2, 3]"),
        Case("not UTF-8", DECODE, stdin=b"\xff\xfe{}"),
        Case("empty stdin", DECODE, stdin=b""),
        Case("oversized JSON (1 MiB + 20 bytes)", DECODE, stdin=big),
        Case("JSON nested 100,000 deep", DECODE, stdin=deep),
        Case("unknown cniVersion 9.9.9", VERSION, config={"cniVersion": "9.9.9"}),
        Case("cniVersion missing", VERSION, config={"cniVersion": None}),
        Case("cniVersion as a number", VERSION, config={"cniVersion": 1.0}),
        Case("name is a number", CONFIG, config={"name": 5}),
        Case("name with path characters", CONFIG, config={"name": "../../etc"}),
        Case("mtu is a string", CONFIG, config={"mtu": "big"}),
        Case("mtu out of range", CONFIG, config={"mtu": 10}),
        Case("ipam is a string", CONFIG, config={"ipam": "dhcp"}),
        Case("ipam.timeout negative", CONFIG, config={"ipam": {"type": "dhcp", "timeout": -1}}),
        Case(
            "ipam.serverAllowList not addresses",
            CONFIG,
            config={"ipam": {"type": "dhcp", "serverAllowList": ["rogue"]}},
        ),
        Case("bridge with '/'", CONFIG, config={"bridge": "br/0"}),
        Case("bridge name 16 characters", CONFIG, config={"bridge": "b" * 16}),
        Case("uplinkInterface invalid regex", CONFIG, config={"uplinkInterface": "eth("}),
        Case("runtimeConfig.mac not a MAC", CONFIG, config={"runtimeConfig": {"mac": "zz"}}),
        Case("ipMasq is a list", CONFIG, config={"ipMasq": [1]}),
        Case("agentSocket relative", CONFIG, config={"agentSocket": "agent.sock"}),
        Case("vlan (not supported)", UNSUPPORTED, config={"vlan": 5}),
        # environment
        Case("CNI_COMMAND missing", INVALID_ENV, env={"CNI_COMMAND": None}),
        Case("CNI_COMMAND unknown", INVALID_ENV, env={"CNI_COMMAND": "REMOVE"}),
        Case("CNI_CONTAINERID missing", INVALID_ENV, env={"CNI_CONTAINERID": None}),
        Case("container id ../../etc", INVALID_ENV, env={"CNI_CONTAINERID": "../../etc/x"}),
        Case("container id with '/'", INVALID_ENV, env={"CNI_CONTAINERID": "abc/def"}),
        Case("container id with a space", INVALID_ENV, env={"CNI_CONTAINERID": "abc def"}),
        Case("CNI_IFNAME missing", INVALID_ENV, env={"CNI_IFNAME": None}),
        Case("ifname 16 characters", INVALID_ENV, env={"CNI_IFNAME": "e" * 16}),
        Case("ifname with '/'", INVALID_ENV, env={"CNI_IFNAME": "et/h0"}),
        Case("ifname '..'", INVALID_ENV, env={"CNI_IFNAME": ".."}),
        Case("CNI_PATH missing", INVALID_ENV, env={"CNI_PATH": None}),
        Case("CNI_ARGS without '='", INVALID_ENV, env={"CNI_ARGS": "K8S_POD_NAME"}),
        Case("CNI_ARGS unknown key", UNSUPPORTED, env={"CNI_ARGS": "EVIL=1"}),
        Case("CNI_NETNS missing", INVALID_ENV, env={"CNI_NETNS": None}),
        Case("netns relative path", INVALID_ENV, env={"CNI_NETNS": "run/netns/x"}),
        Case("netns does not exist", INVALID_ENV, env={"CNI_NETNS": paths["missing"]}),
        Case("netns is a regular file", INVALID_ENV, env={"CNI_NETNS": paths["file"]}),
        Case("netns is a directory", INVALID_ENV, env={"CNI_NETNS": paths["dir"]}),
        Case("netns is a FIFO", INVALID_ENV, env={"CNI_NETNS": paths["fifo"]}),
        Case("netns is /dev/null", INVALID_ENV, env={"CNI_NETNS": "/dev/null"}),
        Case("netns is a symlink loop", INVALID_ENV, env={"CNI_NETNS": paths["loop"]}),
        Case(
            "netns /proc/self/ns/net (node's own)",
            INVALID_ENV,
            env={"CNI_NETNS": "/proc/self/ns/net"},
        ),
        Case("netns of the agent process", INVALID_ENV, env={"CNI_NETNS": paths["agent"]}),
        Case("netns is a mount namespace", INVALID_ENV, env={"CNI_NETNS": "/proc/self/ns/mnt"}),
        Case(
            "DEL with the node's own netns",
            INVALID_ENV,
            env={"CNI_COMMAND": "DEL", "CNI_NETNS": "/proc/self/ns/net"},
        ),
        Case(
            "CHECK below cniVersion 0.4.0",
            VERSION,
            env={"CNI_COMMAND": "CHECK"},
            config={"cniVersion": "0.3.1"},
        ),
    ]


@dataclass
class World:
    """What must not change: snapshots of the node, the pod, the state and the server."""

    node: dict[str, object]
    pod: dict[str, object]
    state: list[str]
    leases: list[tuple[str, str]]


def world(sb: Sandbox, pod: Pod) -> World:
    # lease rows without their expiry: the resident pod renews meanwhile, legitimately
    leases = [(r["mac"], r["ip"]) for r in parse_dnsmasq_leases(sb.dnsmasq_leases_path)]
    return World(netns_snapshot(sb.node), netns_snapshot(pod.name), state_files(sb), leases)


def _tentative(netns: str) -> bool:
    out = subprocess.run(
        ["ip", "-n", netns, "-6", "addr", "show", "tentative"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    return bool(out.strip())


def settled_world(sb: Sandbox, pod: Pod) -> World:
    """A snapshot once the node stopped changing by itself (IPv6 link-local addresses and
    their local routes appear a moment after a link comes up: wait until no address is
    still in DAD, then for a second without change)."""
    deadline = time.monotonic() + 20
    prev = world(sb, pod)
    while True:
        time.sleep(1)
        # Asked before the snapshot too: an address whose DAD ends while the snapshot is
        # taken is in it without its local route, and no longer tentative just after.
        busy = _tentative(sb.node) or _tentative(pod.name)
        cur = world(sb, pod)
        busy = busy or _tentative(sb.node) or _tentative(pod.name)
        if (not busy and not changes(prev, cur)) or time.monotonic() > deadline:
            return cur
        prev = cur


def changes(before: World, after: World) -> list[str]:
    found = [f"node {p}" for p in diff_snapshots(before.node, after.node)]
    found += [f"pod {p}" for p in diff_snapshots(before.pod, after.pod)]
    if before.state != after.state:
        found.append(f"state dir {before.state} -> {after.state}")
    if before.leases != after.leases:
        found.append(f"server leases {before.leases} -> {after.leases}")
    return found


def build_zipapp(out: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "build-zipapp.py"),
            str(out),
            "--interpreter",
            sys.executable,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


def run_plugin(
    sb: Sandbox, exe: Path, case: Case, base_env: dict[str, str], conf: dict[str, Any]
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(base_env)
    for key, value in case.env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    if case.stdin is not None:
        stdin = case.stdin
    else:
        merged = {**conf, **(case.config or {})}
        stdin = json.dumps({k: v for k, v in merged.items() if v is not None}).encode()
    return subprocess.run(
        ["ip", "netns", "exec", sb.node, str(exe)],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=60,
    )


@pytest.mark.scenario("hostile-cni")
@pytest.mark.timeout(600)
def test_bad_cni_input_gets_the_right_code_and_changes_nothing(
    sandbox: Sandbox, tmp_path: Path, figures: dict[str, Any]
) -> None:
    sb = sandbox
    sb.start_dnsmasq()
    sb.start_agent()
    conf = plugin_config(sb)
    exe = build_zipapp(tmp_path / "cni-bridge-dhcp")
    # A pod already on the network: the node is in its steady state (bridge, rules).
    add(sb, sb.add_pod("resident"), conflist(sb))
    target = sb.add_pod("target")
    paths = {
        "missing": str(tmp_path / "no-such-netns"),
        "file": str(tmp_path / "regular"),
        "dir": str(tmp_path / "directory"),
        "fifo": str(tmp_path / "fifo"),
        "loop": str(tmp_path / "loop-a"),
        "agent": f"/proc/{agent_daemon(sb).pid}/ns/net",
    }
    Path(paths["file"]).write_text("not a namespace\n")
    Path(paths["dir"]).mkdir()
    os.mkfifo(paths["fifo"])
    os.symlink(tmp_path / "loop-b", paths["loop"])
    os.symlink(tmp_path / "loop-a", tmp_path / "loop-b")
    base_env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "hostile0",
        "CNI_NETNS": target.path,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": f"{tmp_path}:/usr/lib/cni",
        "CNI_ARGS": "",
    }
    before = settled_world(sb, target)
    problems: list[str] = []
    table = cases(paths)
    for case in table:
        proc = run_plugin(sb, exe, case, base_env, conf)
        where = f"{case.name!r}"
        try:
            out = json.loads(proc.stdout)
        except ValueError:
            problems.append(f"{where}: stdout is not JSON: {proc.stdout[:200]!r}")
            continue
        if proc.returncode == 0 or out.get("code") != case.code:
            problems.append(
                f"{where}: exit {proc.returncode}, code {out.get('code')} (want {case.code}): "
                f"{out.get('msg')}"
            )
        if "Traceback" in json.dumps(out) or b"Traceback" in proc.stderr:
            problems.append(f"{where}: a traceback reached the runtime")
        changed = changes(before, world(sb, target))
        if changed:
            problems.append(f"{where}: changed {changed}")
            before = world(sb, target)
        if not agent_daemon(sb).alive():
            problems.append(f"{where}: the agent died")
            break
    assert not problems, "\n".join(problems)
    figures["bad inputs through the zipapp"] = len(table)
    figures["wrong codes"] = 0
    figures["changes to node/pod/state/server"] = 0


def raw_call(sb: Sandbox, body: bytes, fd: int | None = None) -> dict[str, Any]:
    """One framed message straight to the agent socket (no plugin-side checks)."""
    import array
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    try:
        sock.connect(str(sb.agent_socket))
        data = HEADER.pack(len(body)) + body
        if fd is not None:
            sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        else:
            sock.sendall(data)
        (length,) = HEADER.unpack(client._recv_exact(sock, HEADER.size))
        reply: dict[str, Any] = json.loads(client._recv_exact(sock, length))
    finally:
        sock.close()
    return reply


@pytest.mark.scenario("hostile-cni")
def test_hostile_peer_on_the_agent_socket_is_refused(
    sandbox: Sandbox, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """What the plugin would never send: the agent checks it again itself."""
    sb = sandbox
    sb.start_dnsmasq()
    agent = sb.start_agent()
    add(sb, sb.add_pod("resident"), conflist(sb))
    target = sb.add_pod("target")
    conf = plugin_config(sb)
    env = {"containerId": "peer0", "netns": target.path, "ifname": "eth0", "path": "/usr/lib/cni"}
    regular = tmp_path / "regular"
    regular.write_text("x")

    def req(**env_change: str) -> bytes:
        return json.dumps(make_request("ADD", "1.0.0", {**env, **env_change}, conf, False)).encode()

    def with_fd(path: str) -> tuple[bytes, int]:
        body = json.dumps(make_request("ADD", "1.0.0", env, conf, True)).encode()
        return body, os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    before = settled_world(sb, target)
    sent: list[tuple[str, int, bytes, int | None]] = [
        ("container id ../../x", INVALID_ENV, req(containerId="../../x"), None),
        ("ifname a/b", INVALID_ENV, req(ifname="a/b"), None),
        ("ifname 16 characters", INVALID_ENV, req(ifname="x" * 16), None),
        (
            "netns path of the agent's own namespace",
            INVALID_ENV,
            req(netns=f"/proc/{agent.pid}/ns/net"),
            None,
        ),
        ("unknown op", DECODE, json.dumps({"v": 1, "op": "RM"}).encode(), None),
        ("env not an object", DECODE, json.dumps({"v": 1, "op": "ADD", "env": []}).encode(), None),
        ("protocol version 2", VERSION, json.dumps({"v": 2, "op": "ADD"}).encode(), None),
        ("nested 100,000 deep", DECODE, b"[" * 100_000 + b"]" * 100_000, None),
        ("not JSON", DECODE, b"\x00\x01garbage", None),
    ]
    own_body, own_fd = with_fd(f"/proc/{agent.pid}/ns/net")
    sent.append(("fd of the agent's own netns behind a pod path", INVALID_ENV, own_body, own_fd))
    file_body, file_fd = with_fd(str(regular))
    sent.append(("fd of a regular file behind a pod path", INVALID_ENV, file_body, file_fd))
    problems = []
    try:
        for name, code, body, fd in sent:
            reply = raw_call(sb, body, fd)
            err = reply.get("error") or {}
            if reply.get("ok") or err.get("code") != code:
                problems.append(f"{name}: {reply} (want code {code})")
            changed = changes(before, world(sb, target))
            if changed:
                problems.append(f"{name}: changed {changed}")
                before = world(sb, target)
    finally:
        for _, _, _, fd in sent:
            if fd is not None:
                os.close(fd)
    assert agent.alive()
    assert not problems, "\n".join(problems)
    figures["hostile messages on the socket"] = len(sent)
