"""Rules of pods with odd interface names are found again by CHECK, re-assertion, DEL and GC.

libcni and our plugin accept an ifname such as ``a'b``; iptables-save prints that comment
as ``"a\\'b"`` and python-iptables reads it back as ``a\\'b``, so a rule that embedded the
name never compared equal to itself: every re-assertion appended another jump, DEL failed
(103) and CHECK reported it missing (104). Issue 12, item 2. The same table of names runs
on the three host firewalls (iptables-legacy, iptables-nft, native nftables).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from cni_bridge_dhcp.agent.firewall.model import pod_chain
from testbed.sandbox import run
from tests.netns.test_firewall_traffic import HOST_DROP, NET, P1, Net, net  # noqa: F401

pytestmark = pytest.mark.netns

# Names libcni accepts: anything but '/', ':', whitespace, "."/".." (skel also refuses '%',
# which the kernel takes as a name template; the firewall copes with it all the same).
ODD_IFNAMES = [
    "a'b",
    'a"b',
    "a\\b",
    "'",
    "a%41",  # looks like an escape
    "%",
    "-j",
    "a$b;c`d",
    "#x",
    "é0",
    "ééééééé",  # 14 bytes of UTF-8
    "abcdefghijklmno",  # 15 characters, the maximum
    "x'\"\\%é!*?",
]
# Container ids are validated ([A-Za-z0-9][A-Za-z0-9_.-]*): their odd corners.
ODD_CIDS = ["x", "A.b_c-", "0" * 64]

HELPER = r"""
import ipaddress, json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from cni_bridge_dhcp.agent.firewall import Firewall, PodRules, model
req = json.loads(sys.argv[1])
if req.get("old_format"):
    # the comment format of the release before names were encoded
    model.pod_comment = lambda n, c, i: f"cni-bridge-dhcp: {n} {c} {i}"
def pod(d):
    return PodRules(**{**d, "ips": tuple(ipaddress.ip_interface(i) for i in d["ips"])})
fw = Firewall(req["requested"])
out = []
for verb, *args in req["ops"]:
    try:
        if verb in ("add_pod", "check_pod"):
            res = getattr(fw, verb)(pod(args[0]))
        elif verb == "reassert":
            res = fw.reassert([pod(d) for d in args[0]])
        elif verb == "gc":
            res = fw.gc(args[0], {tuple(k) for k in args[1]})
        elif verb == "pods":
            res = sorted(fw.pods(args[0]))
        else:
            res = getattr(fw, verb)(*args)
    except Exception as exc:
        res = {"error": f"{type(exc).__name__}: {getattr(exc, 'msg', exc)}"}
    out.append(res)
print(json.dumps(out))
"""

HOSTS = ["iptables-legacy", "iptables-nft", "native-nft"]


def pods_table() -> list[dict[str, Any]]:
    out = []
    for i, ifname in enumerate(ODD_IFNAMES):
        cid = ODD_CIDS[i % len(ODD_CIDS)]
        out.append(
            {**P1, "container_id": cid, "ifname": ifname, "ips": [f"192.168.77.{150 + i}/24"]}
        )
    return out


def fw(n: Net, ops: list[list[Any]], **req: Any) -> list[Any]:
    arg = json.dumps({"requested": "auto", "ops": ops, **req})
    proc = run([sys.executable, "-c", HELPER, arg], netns=n.box.node, timeout=120)
    result: list[Any] = json.loads(proc.stdout)
    return result


def lines(n: Net) -> list[str]:
    return [ln for text in n.firewall_state().values() for ln in text]


def setup_host(n: Net, host: str) -> None:
    n.node("sysctl", "-qw", "net.ipv4.ip_forward=1")
    for cmd in HOST_DROP[host]:
        n.node(*cmd)


@pytest.mark.parametrize("host", HOSTS)
def test_odd_names_add_check_reassert_del(net: Net, host: str) -> None:  # noqa: F811
    setup_host(net, host)
    before = net.firewall_state()
    pods = pods_table()
    keys = sorted([p["container_id"], p["ifname"]] for p in pods)

    out = fw(net, [["ensure_bridge", "br0"], *(["add_pod", p] for p in pods)])
    assert all(r is None for r in out), out
    added = net.firewall_state()
    assert added != before

    checks = fw(net, [*(["check_pod", p] for p in pods), ["pods", NET]])
    assert checks[:-1] == [[] for _ in pods]  # CHECK finds everything it wrote
    assert checks[-1] == keys

    # repeated re-assertion restores nothing and adds nothing
    out = fw(net, [["reassert", pods], ["reassert", pods], ["reassert", pods]])
    assert out == [[], [], []]
    assert net.firewall_state() == added

    out = fw(
        net, [*(["del_pod", NET, p["container_id"], p["ifname"]] for p in pods), ["pods", NET]]
    )
    assert all(r is None for r in out[:-1]), out
    assert out[-1] == []
    fw(net, [["remove_bridge", "br0"]])
    assert net.firewall_state() == before


@pytest.mark.parametrize("host", HOSTS)
def test_rules_of_the_previous_comment_format_are_found_and_replaced(
    net: Net,  # noqa: F811
    host: str,
) -> None:
    setup_host(net, host)
    before = net.firewall_state()
    pods = pods_table()
    keys = sorted([p["container_id"], p["ifname"]] for p in pods)
    # rules as the previous release wrote them: raw names in comments
    out = fw(net, [["ensure_bridge", "br0"], *(["add_pod", p] for p in pods)], old_format=True)
    # (python-iptables itself stored ``a'b`` as ``a\\'b``: the write is now refused as
    # unreadable, after it was made, as the previous release made it)
    assert any("fwnet x a" in ln for ln in lines(net))  # raw names, e.g. ``a\\'b``

    # after the upgrade: DEL finds them, so does the listing GC works from
    gone = pods[1:3]  # a"b and a\\b
    out = fw(net, [*(["del_pod", NET, p["container_id"], p["ifname"]] for p in gone)])
    assert out == [None, None]
    assert not any(
        pod_chain(NET, p["container_id"], p["ifname"]) in ln for p in gone for ln in lines(net)
    )
    pods = [p for p in pods if p not in gone]
    keys = sorted([p["container_id"], p["ifname"]] for p in pods)
    # a re-assertion replaces the rest, never duplicates them
    out = fw(net, [["pods", NET], ["reassert", pods], ["reassert", pods], ["check_pod", pods[0]]])
    assert out[0] == keys
    assert out[2] == [] and out[3] == []
    upgraded = lines(net)
    assert not any("fwnet x a" in ln for ln in upgraded)
    assert any("fwnet x %612762" in ln for ln in upgraded)  # a'b, encoded
    # one jump per pod in each of FORWARD (CBD-FORWARD), nat POSTROUTING, bridge prerouting
    assert len([ln for ln in upgraded if "fwnet " in ln]) == len(pods) * 3
    # GC of the network with nothing kept removes every pod, whatever its name
    out = fw(net, [["gc", NET, []], ["pods", NET], ["remove_bridge", "br0"]])
    assert sorted(out[0]) == keys and out[1] == []
    assert net.firewall_state() == before
