"""The DHCP scenarios against each LAN server we know of: Kea, busybox udhcpd, ISC dhcpd
and dnsmasq (issue 12 item 9). Each server is checked through its own lease file:

- lifecycle: lease; renew across T1 (short leases); agent restart keeps the lease and
  renews it; DEL releases it at the server; a new sandbox of the pod gets the same address;
- reservations by MAC (and Kea's by client id 01+MAC with ipam.clientId "mac");
- 8 concurrent ADDs: all succeed, 8 distinct leases, none left at the server after DEL
  (udhcpd ARP-pings each new address for ~2 s and answers one packet at a time);
- Kea: RELEASE carries an ipam.provide'd client id, so the release frees the lease.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from cni_bridge_dhcp.agent.dhcp.journal import Journal
from testbed.dhcpservers import (
    Reservation,
    ServerLease,
    dnsmasq_leases,
    isc_hosts,
    isc_leases,
    kea_leases,
    udhcpd_leases,
)
from testbed.sandbox import Daemon, Pod, Sandbox, dhcpd_config
from tests.e2e.helpers import NET, add, conflist, ip_json

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

LEASE = 12  # seconds: T1 at 6 s
RESERVED_MAC = "02:42:c0:a8:4d:3c"
RESERVED_IP = "192.168.77.60"
CID_MAC = "02:42:c0:a8:4d:3d"
CID_IP = "192.168.77.61"


@dataclass(frozen=True)
class Server:
    name: str
    start: Callable[[Sandbox, int, tuple[Reservation, ...]], Daemon]
    leases: Callable[[Sandbox], list[ServerLease]]
    min_lease: int  # the shortest lease it gives (dnsmasq: 2 min)
    client_id_reservations: bool = False


def _isc(sb: Sandbox, lease: int, res: tuple[Reservation, ...]) -> Daemon:
    return sb.start_dhcpd(config=dhcpd_config(lease_seconds=lease) + isc_hosts(res))


def _dnsmasq(sb: Sandbox, lease: int, res: tuple[Reservation, ...]) -> Daemon:
    hosts = [f"--dhcp-host={r.mac},{r.ip}" for r in res if r.mac]
    return sb.start_dnsmasq(lease=f"{max(lease, 120)}s", extra=hosts)


SERVERS = {
    "kea": Server(
        "kea",
        lambda sb, lease, res: sb.start_kea(lease_seconds=lease, reservations=res),
        lambda sb: kea_leases(sb.kea_leases_path),
        min_lease=1,
        client_id_reservations=True,
    ),
    "udhcpd": Server(
        "udhcpd",
        lambda sb, lease, res: sb.start_udhcpd(lease_seconds=lease, reservations=res),
        lambda sb: udhcpd_leases(sb.udhcpd_leases_path),
        min_lease=1,
    ),
    "isc": Server("isc", _isc, lambda sb: isc_leases(sb.dhcpd_leases_path), min_lease=1),
    "dnsmasq": Server(
        "dnsmasq", _dnsmasq, lambda sb: dnsmasq_leases(sb.dnsmasq_leases_path), min_lease=120
    ),
}


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def pod_mac(pod: Pod) -> str:
    return str(ip_json(["link", "show", "eth0"], pod.name)[0]["address"]).lower()


def active(server: Server, sb: Sandbox, mac: str) -> list[str]:
    return [le.ip for le in server.leases(sb) if le.mac == mac and le.active]


def address_of(result: dict[str, Any]) -> str:
    return str(result["ips"][0]["address"]).split("/")[0]


def journaled_bound_at(sb: Sandbox) -> dict[str, float]:
    return {le.address.ip.exploded: le.bound_at for le in Journal(sb.state_dir).load()}


def args(name: str) -> str:
    return f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}"


# ISC dhcpd: the same lifecycle is in tests/netns/test_dhcp_client.py
@pytest.mark.parametrize("kind", ["kea", "udhcpd"])
def test_lease_renew_restart_release_and_same_address(sandbox: Sandbox, kind: str) -> None:
    sb, server = sandbox, SERVERS[kind]
    server.start(sb, LEASE, ())
    agent = sb.start_agent()
    conf = conflist(sb)
    pod = sb.add_pod("a")
    ip = address_of(add(sb, pod, conf, cni_args=args("web-0")))
    mac = pod_mac(pod)
    # lease: the server holds it for the pod's MAC
    wait_for(lambda: active(server, sb, mac) == [ip], 5, f"{kind} to record {ip} for {mac}")

    # renew across T1, unicast to the server
    first = journaled_bound_at(sb)[ip]
    wait_for(lambda: journaled_bound_at(sb)[ip] > first, 3 * LEASE, "a renewal at T1")

    # agent restart: the lease is re-adopted (not re-acquired) and renewed again
    agent.stop()
    sb.daemons.remove(agent)
    sb.start_agent()
    before = journaled_bound_at(sb)[ip]
    wait_for(lambda: journaled_bound_at(sb).get(ip, 0) > before, 3 * LEASE, "renewal after restart")
    assert ip in str(ip_json(["addr", "show", "eth0"], pod.name))
    assert active(server, sb, mac) == [ip]

    # DEL releases it at the server
    sb.cnitool("del", NET, pod, conflist=conf, cni_args=args("web-0"))
    wait_for(lambda: active(server, sb, mac) == [], 5, f"{kind} to free {ip} after DEL")
    # udhcpd marks a released lease as expiring "now" and re-offers it only once that
    # second has passed (expires < now): a re-ADD within the same second gets another one
    time.sleep(1.1)

    # a new sandbox of the same pod (new netns, new MAC) asks for and gets the same address
    again = sb.add_pod("b")
    assert address_of(add(sb, again, conf, cni_args=args("web-0"))) == ip
    assert pod_mac(again) != mac
    sb.cnitool("del", NET, again, conflist=conf, cni_args=args("web-0"))


@pytest.mark.parametrize("kind", ["kea", "udhcpd", "isc", "dnsmasq"])
def test_reservation_by_mac(sandbox: Sandbox, kind: str) -> None:
    sb, server = sandbox, SERVERS[kind]
    res = [Reservation(RESERVED_IP, mac=RESERVED_MAC)]
    if server.client_id_reservations:
        res.append(Reservation(CID_IP, client_id="01:" + CID_MAC))
    server.start(sb, max(LEASE, server.min_lease), tuple(res))
    sb.start_agent()
    conf = conflist(sb)
    pod = sb.add_pod("r")
    got = add(sb, pod, conf, cni_args=args("reserved") + f";MAC={RESERVED_MAC}")
    assert address_of(got) == RESERVED_IP
    sb.cnitool("del", NET, pod, conflist=conf, cni_args=args("reserved") + f";MAC={RESERVED_MAC}")
    if server.client_id_reservations:
        # keyed by client id 01+MAC (networkd's only way): needs ipam.clientId "mac"
        by_cid = conflist(sb, ipam={"type": "dhcp", "timeout": 20, "clientId": "mac"})
        pod2 = sb.add_pod("c")
        cni_args = args("by-cid") + f";MAC={CID_MAC}"
        assert address_of(add(sb, pod2, by_cid, cni_args=cni_args)) == CID_IP
        sb.cnitool("del", NET, pod2, conflist=by_cid, cni_args=cni_args)
        wait_for(lambda: active(server, sb, CID_MAC) == [], 5, "the reserved lease released")


@pytest.mark.parametrize("kind", ["kea", "udhcpd", "isc", "dnsmasq"])
def test_eight_concurrent_adds_all_lease_and_nothing_leaks(sandbox: Sandbox, kind: str) -> None:
    sb, server = sandbox, SERVERS[kind]
    server.start(sb, max(60, server.min_lease), ())
    sb.start_agent()
    conf = conflist(sb, ipam={"type": "dhcp"})  # the default ipam.timeout, 30 s
    pods = [sb.add_pod(f"p{n}") for n in range(8)]

    def one(n_pod: tuple[int, Pod]) -> str:
        n, pod = n_pod
        return address_of(add(sb, pod, conf, cni_args=args(f"web-{n}"), timeout=90))

    with ThreadPoolExecutor(8) as pool:
        addresses = list(pool.map(one, enumerate(pods)))
    assert len(set(addresses)) == 8
    macs = {pod_mac(p): a for p, a in zip(pods, addresses, strict=True)}

    def held() -> dict[str, str]:
        return {le.mac: le.ip for le in server.leases(sb) if le.active}

    wait_for(lambda: held() == macs, 5, f"{kind} to hold exactly the 8 pods' leases")
    for n, pod in enumerate(pods):
        sb.cnitool("del", NET, pod, conflist=conf, cni_args=args(f"web-{n}"))
    wait_for(lambda: held() == {}, 5, f"{kind} to free all 8 leases (got {held()})")


def test_kea_frees_a_lease_whose_client_id_comes_from_ipam_provide(sandbox: Sandbox) -> None:
    sb, server = sandbox, SERVERS["kea"]
    server.start(sb, 60, ())
    sb.start_agent()
    ipam = {
        "type": "dhcp",
        "timeout": 20,
        "provide": [{"option": "dhcp-client-identifier", "value": "provided-id"}],
    }
    conf = conflist(sb, ipam=ipam)
    pod = sb.add_pod("p")
    ip = address_of(add(sb, pod, conf, cni_args=args("web-0")))
    (lease,) = [le for le in server.leases(sb) if le.active]
    assert lease.ip == ip and lease.client_id == b"provided-id".hex()
    sb.cnitool("del", NET, pod, conflist=conf, cni_args=args("web-0"))
    wait_for(lambda: not active(server, sb, lease.mac), 5, "Kea to free the lease")
    log = (sb.tmp / "kea.log").read_text()
    assert "DHCP4_RELEASE_FAIL_WRONG_CLIENT" not in log


def test_udhcpd_add_failing_after_its_request_leaves_no_lease(sandbox: Sandbox) -> None:
    """Pod A's REQUEST waits in udhcpd's queue behind pod B's 4 s ARP ping, so its ACK
    comes after A's ipam.timeout: A's ADD fails (100), and what its REQUEST committed at
    the server must be released rather than held for the lease time."""
    sb = sandbox
    sb.start_udhcpd(lease_seconds=60, arp_ping_ms=4000)
    sb.start_agent()
    quick = conflist(sb, ipam={"type": "dhcp", "timeout": 7})
    patient = conflist(sb, ipam={"type": "dhcp", "timeout": 40})
    # the first ADD takes the uplink over (seconds): done before, so A really goes first
    warm = sb.add_pod("w")
    warm_ip = address_of(add(sb, warm, patient))
    a, b = sb.add_pod("a"), sb.add_pod("b")
    with ThreadPoolExecutor(2) as pool:
        fa = pool.submit(sb.cnitool, "add", NET, a, conflist=quick, check=False, timeout=60)
        time.sleep(1.0)  # A's DISCOVER first: its OFFER comes after one ARP ping
        fb = pool.submit(sb.cnitool, "add", NET, b, conflist=patient, check=False, timeout=60)
        ra, rb = fa.result(), fb.result()
    assert rb.returncode == 0, rb.stdout + rb.stderr
    out_a = ra.stdout + ra.stderr
    assert ra.returncode != 0 and '"code":100' in out_a.replace(" ", ""), out_a
    # the premise: A got its OFFER and sent a REQUEST before giving up ("sent N DISCOVER,
    # M REQUEST; ..." in the error's details)
    assert " REQUEST" in out_a, out_a
    b_ip = address_of(json.loads(rb.stdout))
    # after the queue drained (A's REQUEST, then its RELEASE), only B holds a lease
    time.sleep(2.0)

    def held() -> set[str]:
        return {le.ip for le in udhcpd_leases(sb.udhcpd_leases_path) if le.active}

    wait_for(lambda: held() == {warm_ip, b_ip}, 6, "udhcpd to hold W's and B's leases only")
