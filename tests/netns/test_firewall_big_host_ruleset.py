"""A node whose own nftables ruleset is large (kube-proxy's nftables mode, firewalld): a pod's
ADD, CHECK and DEL read only the chains they edit, never the host's other rules.

Every ADD and DEL used to list the whole ruleset: with 2,000 rules of the host's that was
~100 ms of the agent's CPU each time, growing with every Service. Here the host table has
1,000 rules in 100 chains and a forward chain that drops; the backend's reads are recorded
and must hold none of those 1,000, while the pod's rules still land in the forward chain,
are found by CHECK, and leave with DEL, the host's table as it was.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from typing import TypedDict

import pytest

from cni_bridge_dhcp.agent.firewall.model import pod_chain
from testbed.sandbox import REPO_ROOT, run

pytestmark = pytest.mark.netns

SERVICES = 100
RULES_PER_SERVICE = 10

HELPER = r"""
import ipaddress, json, sys
from cni_bridge_dhcp.agent.firewall import Firewall, PodRules
from cni_bridge_dhcp.agent.firewall import libnft

listed = []  # [what was listed, the chains of the rules it printed]
real_run = libnft.Nft._run_text

def recording(self, text):
    out = real_run(self, text)
    for cmd in json.loads(text)["nftables"]:
        if "list" in cmd:
            chains = sorted({i["rule"]["chain"] for i in out.get("nftables", []) if "rule" in i})
            listed.append([next(iter(cmd["list"])), chains])
    return out

libnft.Nft._run_text = recording
pod = PodRules(
    network="lan", container_id="c0ffee1", ifname="eth0", bridge="cni0", host_veth="veth1",
    mac="02:00:00:00:00:01", ips=(ipaddress.ip_interface("192.168.77.50/24"),),
    ip_masq=False, macspoofchk=True,
)
fw = Firewall("nftables")
out = {}
for verb in sys.argv[1:]:
    listed.clear()
    if verb == "del_pod":
        res = fw.del_pod("lan", "c0ffee1", "eth0")
    elif verb == "remove_bridge":  # what the agent does when the bridge's last pod goes
        res = fw.remove_bridge("cni0")
    else:
        res = getattr(fw, verb)(pod)
    out[verb] = {"result": res, "listed": list(listed)}
print(json.dumps(out))
"""


def _host_table() -> str:
    lines = ["table inet hostfw {"]
    for s in range(SERVICES):
        lines.append(f"  chain svc{s} {{")
        for r in range(RULES_PER_SERVICE):
            lines.append(f"    ip daddr 10.96.{s}.{r + 1} tcp dport {8000 + r} accept")
        lines.append("  }")
    lines.append("  chain forward { type filter hook forward priority 0; policy drop; }")
    lines.append("}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def node() -> Iterator[str]:
    name = f"cbd-bigfw-{uuid.uuid4().hex[:8]}"
    run(["ip", "netns", "add", name])
    try:
        run(["nft", "-f", "-"], netns=name, input=_host_table())
        yield name
    finally:
        run(["ip", "netns", "delete", name], check=False)


def _host_rules(node: str) -> list[object]:
    listed = json.loads(run(["nft", "-j", "list", "table", "inet", "hostfw"], netns=node).stdout)
    return [item for item in listed["nftables"] if "metainfo" not in item]


class VerbOut(TypedDict):
    result: object
    listed: list[tuple[str, list[str]]]  # (what was listed, the chains of its rules)


def _helper(node: str, *verbs: str) -> dict[str, VerbOut]:
    proc = run(
        [sys.executable, "-c", HELPER, *verbs],
        netns=node,
        env={"PYTHONPATH": str(REPO_ROOT)},
        timeout=60,
    )
    out: dict[str, VerbOut] = json.loads(proc.stdout)
    return out


def test_pod_rules_on_a_large_host_ruleset_read_only_the_chains_they_edit(node: str) -> None:
    before = _host_rules(node)
    out = _helper(node, "add_pod", "check_pod")
    forward = run(["nft", "list", "chain", "inet", "hostfw", "forward"], netns=node).stdout
    out |= _helper(node, "del_pod")
    after_del = run(["nft", "list", "ruleset"], netns=node).stdout
    out |= _helper(node, "remove_bridge")

    for verb in ("add_pod", "check_pod", "del_pod", "remove_bridge"):
        listed = out[verb]["listed"]
        assert listed, f"{verb} read nothing"
        kinds = {what for what, _ in listed}
        assert "ruleset" not in kinds, f"{verb} listed the whole ruleset: {listed}"
        read = {c for _, chains in listed for c in chains}
        assert not [c for c in read if c.startswith("svc")], f"{verb} read {sorted(read)[:5]}"
    assert out["check_pod"]["result"] == [], "CHECK found the pod's rules missing"
    # The pod's traffic is let through the host's dropping forward chain...
    assert "jump CBD-FORWARD" in forward, forward
    # ... DEL takes the pod's rules out, and once the bridge's last pod is gone the host's
    # table is as it was and our own table is gone.
    chain = pod_chain("lan", "c0ffee1", "eth0")
    assert chain not in after_del and "c0ffee1" not in after_del, after_del
    assert _host_rules(node) == before
    assert "cni-bridge-dhcp" not in run(["nft", "list", "tables"], netns=node).stdout


# ------------------------------------------------------------------ iptables-nft

IPT_HELPER = r"""
import ipaddress, json, subprocess, sys
from cni_bridge_dhcp.agent.firewall import Firewall, PodRules

execs = []
real_run = subprocess.run

def recording(cmd, *args, **kwargs):
    if isinstance(cmd, list) and cmd and "tables" in cmd[0]:
        execs.append(list(cmd))
    return real_run(cmd, *args, **kwargs)

subprocess.run = recording

def pod(cid, last):
    return PodRules(
        network="lan", container_id=cid, ifname="eth0", bridge="cni0", host_veth="veth" + cid,
        mac="02:00:00:00:00:01", ips=(ipaddress.ip_interface(f"192.168.77.{last}/24"),),
        ip_masq=False, macspoofchk=False,
    )

fw = Firewall("nftables")
out = []
for step in sys.argv[1:]:
    verb, cid, last = step.split(":")
    execs.clear()
    if verb == "del_pod":
        res = fw.del_pod("lan", cid, "eth0")
    elif verb == "remove_bridge":
        res = fw.remove_bridge("cni0")
    else:
        res = getattr(fw, verb)(pod(cid, int(last)))
    out.append({"step": step, "result": res, "execs": list(execs)})
print(json.dumps(out))
"""

BANNED = 1000  # fail2ban-style: one chain of REJECTs, plus ufw/Docker-sized others


def _iptables_host_table() -> str:
    lines = ["*filter", ":FORWARD DROP [0:0]", ":f2b-sshd - [0:0]", ":DOCKER-USER - [0:0]"]
    for i in range(BANNED):
        lines.append(f"-A f2b-sshd -s 203.0.{i // 250}.{i % 250 + 1}/32 -j REJECT")
    lines += ["-A f2b-sshd -j RETURN", "-A FORWARD -j DOCKER-USER", "-A DOCKER-USER -j RETURN"]
    return "\n".join([*lines, "COMMIT"]) + "\n"


@pytest.fixture
def ipt_node() -> Iterator[str]:
    name = f"cbd-bigipt-{uuid.uuid4().hex[:8]}"
    run(["ip", "netns", "add", name])
    try:
        run(["iptables-nft-restore"], netns=name, input=_iptables_host_table())
        yield name
    finally:
        run(["ip", "netns", "delete", name], check=False)


class StepOut(TypedDict):
    step: str
    result: object
    execs: list[list[str]]


def test_a_large_iptables_nft_filter_table_is_read_chain_by_chain(ipt_node: str) -> None:
    """fail2ban's ban list in the iptables-nft filter table: after the first save shows the
    table is big, the pod steps read only FORWARD, CBD-FORWARD and their pod's chain, and
    what they write stays in iptables-nft's own encoding (iptables-nft-save still works)."""
    save = ["iptables-nft-save", "-t", "filter"]
    host_before = run(save, netns=ipt_node).stdout
    first = ["add_pod:aaa1:50"]
    second = ["add_pod:bbb2:51", "check_pod:bbb2:51"]
    proc = run(
        [sys.executable, "-c", IPT_HELPER, *first, *second],
        netns=ipt_node,
        env={"PYTHONPATH": str(REPO_ROOT)},
        timeout=120,
    )
    steps: list[StepOut] = json.loads(proc.stdout)
    mid = run(save, netns=ipt_node).stdout
    proc = run(
        [sys.executable, "-c", IPT_HELPER, "add_pod:ccc3:52", "del_pod:bbb2:0", "del_pod:ccc3:0"],
        netns=ipt_node,
        env={"PYTHONPATH": str(REPO_ROOT)},
        timeout=120,
    )
    steps += json.loads(proc.stdout)
    proc = run(
        [sys.executable, "-c", IPT_HELPER, "del_pod:aaa1:0", "remove_bridge:-:0"],
        netns=ipt_node,
        env={"PYTHONPATH": str(REPO_ROOT)},
        timeout=120,
    )
    steps += json.loads(proc.stdout)
    by_step = {s["step"]: s for s in steps}

    # The first step of each process learns the table's size from one whole save...
    assert any(e[0] == "iptables-nft-save" for e in by_step["add_pod:aaa1:50"]["execs"])
    # ... then every later step lists single chains only: the hook, ours and its pod's.
    for step in ("add_pod:bbb2:51", "check_pod:bbb2:51", "del_pod:ccc3:0", "remove_bridge:-:0"):
        execs = by_step[step]["execs"]
        assert not [e for e in execs if e[0].endswith("-save")], f"{step} saved: {execs}"
        listed = {e[e.index("-S") + 1] for e in execs if "-S" in e}
        assert listed, f"{step} read nothing: {execs}"
        cid = step.split(":")[1]
        allowed = {"FORWARD", "CBD-FORWARD", pod_chain("lan", cid, "eth0")}
        assert listed <= allowed, f"{step} read {sorted(listed - allowed)}"
    assert by_step["check_pod:bbb2:51"]["result"] == [], "CHECK found the pod's rules missing"

    # The rules are iptables-nft's own: its save reads them back, incompatible nowhere.
    assert "incompatible" not in mid
    assert "-A FORWARD -m comment --comment" in mid and "-j CBD-FORWARD" in mid, mid
    for cid, last in (("aaa1", 50), ("bbb2", 51)):
        chain = pod_chain("lan", cid, "eth0")
        assert "-A CBD-FORWARD" in mid and f"-j {chain}" in mid, mid
        assert f"-A {chain} -s 192.168.77.{last}/32 -i cni0" in mid, mid
    # Everything goes with DEL and the bridge's removal: the host's table is as it was.
    assert run(save, netns=ipt_node).stdout.splitlines()[1:-1] == host_before.splitlines()[1:-1]


GONE_HELPER = r"""
import json, subprocess, time
from cni_bridge_dhcp.agent.firewall import libnft, restore
from cni_bridge_dhcp.agent.firewall.nftables import discover

nft = libnft.shared()
chains = nft.list({"chains": None})
# Our shared chain: the chain list names it, an admin removed it right after (iptables -X).
gone = {"chain": {"family": "ip", "table": "filter", "name": "CBD-FORWARD"}}
restore._last_save["iptables-nft filter"] = (100_000, time.monotonic())  # a big table
execs = []
real_run = subprocess.run

def recording(cmd, *args, **kwargs):
    execs.append(list(cmd))
    return real_run(cmd, *args, **kwargs)

subprocess.run = recording
places = discover(nft, [*chains, gone])
table = places[0].access
state = table.read()
print(json.dumps({
    "places": [p.label for p in places],
    "chains": None if state is None else sorted(state.chains),
    "execs": execs,
}))
"""


def test_a_chain_gone_since_the_chain_list_does_not_turn_the_table_native(ipt_node: str) -> None:
    """iptables 1.8.9 answers "incompatible" for a chain that is not there. A chain removed
    between our chain list and its listing must not make us write native nftables rules
    into iptables-nft's table (that breaks iptables-nft-save for Docker and kube-proxy):
    the whole table is saved instead, and it says the table is fine."""
    proc = run(
        [sys.executable, "-c", GONE_HELPER],
        netns=ipt_node,
        env={"PYTHONPATH": str(REPO_ROOT)},
        timeout=60,
    )
    out = json.loads(proc.stdout)
    assert out["places"][0] == "iptables-nft filter", out["places"]
    assert out["chains"] == ["FORWARD"], out
    listed = [e for e in out["execs"] if "-S" in e]
    assert ["iptables-nft", "-t", "filter", "-S", "CBD-FORWARD"] in listed, out["execs"]
    assert ["iptables-nft-save", "-t", "filter"] in out["execs"], out["execs"]
