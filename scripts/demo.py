#!/usr/bin/env python3
"""`make demo`: a throwaway LAN, a node and two pods, wired by cni-bridge-dhcp.

Everything lives in network namespaces created here and removed at the end; the
machine's own network is never touched. Needs root.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed.sandbox import (  # noqa: E402
    BEHIND_IP6,
    LAN_PREFIX6,
    NODE_IP,
    ROUTER_IP,
    Sandbox,
    ping,
    run,
)

NET = "lan"


def say(text: str = "") -> None:
    print(text, flush=True)


def section(title: str) -> None:
    say()
    say(f"== {title} " + "=" * max(0, 70 - len(title)))


def show(cmd: list[str], netns: str) -> None:
    say(f"$ {' '.join(cmd)}    # in {netns}")
    for line in run(cmd, netns=netns).stdout.rstrip().splitlines():
        say(f"    {line}")


def main() -> int:
    if os.geteuid() != 0:
        say("make demo needs root (it creates network namespaces).")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="cbd-demo-"))
    sb = Sandbox(tmp)
    ok = True
    try:
        section("1. a fake LAN with a router and a real DHCP server (dnsmasq)")
        sb.setup()
        sb.start_dnsmasq(ipv6_ra=True)
        say(f"LAN 192.168.77.0/24: router {ROUTER_IP} in namespace {sb.lan}, dnsmasq on lan0")
        say(f"the LAN also announces IPv6: router advertisements of {LAN_PREFIX6}/64 (SLAAC)")
        _wait_for_node_ipv6(sb)
        say(f"node namespace {sb.node}: eth0 = {NODE_IP}/24, default via {ROUTER_IP}")
        show(["ip", "-br", "addr"], sb.node)

        section("2. the agent starts in the node; pods are added by a real libcni client")
        sb.start_agent()
        conf = {
            "cniVersion": "1.0.0",
            "name": NET,
            "plugins": [
                {
                    "type": "cni-bridge-dhcp",
                    "bridge": "cni0",
                    "uplinkInterface": "eth0",
                    "agentSocket": str(sb.agent_socket),
                    "ipam": {"type": "dhcp"},
                }
            ],
        }
        say("conflist: " + json.dumps(conf["plugins"][0]))
        pods = {}
        v6: dict[str, str] = {}
        for name in ("web", "db"):
            pod = sb.add_pod(name)
            args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME={name}"
            result = json.loads(sb.cnitool("add", NET, pod, conflist=conf, cni_args=args).stdout)
            address = result["ips"][0]["address"]
            pods[name] = (pod, address.split("/")[0])
            say(
                f"cnitool add {NET} {pod.path}  ->  {name}: {address}, gateway {result['ips'][0].get('gateway')}"
            )
            for ip in result["ips"][1:]:
                v6[name] = ip["address"].split("/")[0]
                say(f"    {name}: IPv6 {ip['address']} (SLAAC), gateway {ip.get('gateway')}")

        section("3. the node: eth0 is now a port of cni0, which holds the node's address and MAC")
        show(["ip", "-br", "link"], sb.node)
        show(["ip", "-br", "addr", "show", "cni0"], sb.node)
        show(["ip", "route"], sb.node)
        # The RA default route moves to cni0 with the bridge's first RA after the takeover
        # (its router solicitation: about 2 s); with IPv6 forwarding on, accept_ra=2 keeps it.
        _wait_for_node_ipv6(sb, dev="cni0")
        show(["ip", "-6", "route", "show", "default"], sb.node)

        section("4. the pods: LAN addresses from the LAN's DHCP server, default route via the node")
        for pod, _ in pods.values():
            show(["ip", "-br", "addr", "show", "eth0"], pod.name)
            show(["ip", "route"], pod.name)
            show(["ip", "-6", "route", "show", "default"], pod.name)
        say("$ cni-bridge-dhcp status")
        status = run(
            [sys.executable, "-m", "cni_bridge_dhcp", "status", "--socket", str(sb.agent_socket)],
            netns=sb.node,
        ).stdout
        for line in status.rstrip().splitlines():
            say(f"    {line}")

        section("5. proof: pings")
        web, db_ip = pods["web"][0], pods["db"][1]
        # A host "beyond the LAN", reachable only through the router: inside the lan namespace.
        beyond = "198.51.100.1"
        run(["ip", "addr", "add", f"{beyond}/32", "dev", "lo"], netns=sb.lan)
        run(["ip", "link", "set", "lo", "up"], netns=sb.lan)
        show(["ip", "route", "get", beyond], web.name)
        checks = [
            (f"web -> LAN router {ROUTER_IP}", web.name, ROUTER_IP),
            (f"web -> node {NODE_IP}", web.name, NODE_IP),
            (f"web -> db {db_ip}", web.name, db_ip),
            (f"LAN router -> db {db_ip}", sb.lan, db_ip),
            (f"web -> {beyond} beyond the LAN (via the node)", web.name, beyond),
            (f"node -> LAN router {ROUTER_IP}", sb.node, ROUTER_IP),
        ]
        if "web" in v6 and "db" in v6:
            checks += [
                (f"web -> db {v6['db']} (IPv6)", web.name, v6["db"]),
                (
                    f"web -> {BEHIND_IP6} behind the router (IPv6, via the node)",
                    web.name,
                    BEHIND_IP6,
                ),
            ]
        else:
            ok = False
            say("  FAIL the pods got no IPv6 address from the LAN's router advertisements")
        for label, netns, target in checks:
            good = ping(netns, target)
            if not good:
                # One lost echo is no verdict on a LAN (neighbour discovery on two hops, a
                # router busy with its RAs): three more, and the failure explained if all fail.
                good = ping(netns, target, count=3)
                label += " (the first echo got no answer, a later one did)" if good else ""
            ok &= good
            say(f"  {'ok  ' if good else 'FAIL'} {label}")
            if not good:
                _explain_failed_ping(sb, netns, target)

        section("6. cleanup: DEL releases each lease at the DHCP server")
        for pod, _ in pods.values():
            sb.cnitool("del", NET, pod, conflist=conf)
            say(f"cnitool del {NET} {pod.path}")
        leases = sb.dnsmasq_leases_path.read_text().strip()
        say(f"dnsmasq leases left: {leases or 'none'}")
    finally:
        sb.teardown()
        say("sandbox removed; the machine's own network was not touched.")
    if ok:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        say(f"the agent's and dnsmasq's logs are kept in {tmp}")
    say()
    say("demo: OK" if ok else "demo: FAILED")
    return 0 if ok else 1


def _explain_failed_ping(sb: Sandbox, source: str, target: str) -> None:
    """What a reader needs to see why a ping failed: each hop's addresses (with DAD
    flags), routes and neighbour entries, for the family of the target."""
    family = "-6" if ":" in target else "-4"
    for netns in dict.fromkeys((source, sb.node, sb.lan)):
        for what in (["addr"], ["route"], ["neigh"]):
            show(["ip", family, *what], netns)


def _wait_for_node_ipv6(sb: Sandbox, dev: str = "eth0", timeout: float = 20.0) -> None:
    """The node's IPv6 default route from the LAN's RAs on ``dev`` (before the agent starts,
    as a real node would have it; on cni0 after the takeover)."""
    deadline = time.monotonic() + timeout
    cmd = ["ip", "-6", "route", "show", "default", "dev", dev]
    while time.monotonic() < deadline:
        if run(cmd, netns=sb.node).stdout.strip():
            return
        time.sleep(0.2)
    say(f"warning: the node has no IPv6 default route from the LAN's RAs on {dev}")


if __name__ == "__main__":
    raise SystemExit(main())
