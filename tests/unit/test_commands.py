"""ADD's undo stack and DEL's best-effort teardown, against fake agent services.

The handlers (commands/main_role.py, commands/common.py) and the firewall registry run
for real, on a real attachment store and address book in a temp dir. Faked: the agent's
``Services`` (datapath, leases, the firewall backend) and, at the handler module's names,
the pod-netns fd and the three netlink steps (veth, pod addressing, link deletion), which
would otherwise need a pod namespace. Each ADD step fails in turn; the test checks what
the undo released and the CNI error code that reaches the runtime.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from cni_bridge_dhcp.agent.commands import common, dhcpv6_step, main_role, slaac_step
from cni_bridge_dhcp.agent.commands.types import Datapath, Request
from cni_bridge_dhcp.agent.config import NetConf
from cni_bridge_dhcp.agent.datapath.podroutes import PodAddressing
from cni_bridge_dhcp.agent.datapath.veth import VethInfo, VethSpec
from cni_bridge_dhcp.agent.datapath.vethreaper import VethReaper
from cni_bridge_dhcp.agent.dhcp import BOUND, Lease, LeaseRequest
from cni_bridge_dhcp.agent.dhcp.v6.manager import Lease6Manager
from cni_bridge_dhcp.agent.firewall.model import PodRules
from cni_bridge_dhcp.agent.firewall.registry import FirewallRegistry
from cni_bridge_dhcp.agent.state.addressbook import AddressBook
from cni_bridge_dhcp.agent.state.attachments import Attachment, AttachmentState, AttachmentStore
from cni_bridge_dhcp.cni.errors import CNIError, ErrorCode

KEY = "lan/c1/eth0"


def _conf(**ipam: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "lan",
        "type": "cni-bridge-dhcp",
        "bridge": "cbd0",
        "ipam": {"type": "dhcp", **ipam},
    }


def _request(op: str, raw: dict[str, Any] | None = None) -> Request:
    return Request(
        op=op,
        cni_version="1.0.0",
        container_id="c1",
        netns="/var/run/netns/pod1",
        ifname="eth0",
        cni_path="/opt/cni/bin",
        args={"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "web-0"},
        raw=raw or _conf(),
    )


class FakeLeases:
    def __init__(self) -> None:
        self.held: dict[str, Lease] = {}
        self.released: list[str] = []
        self.released_on: list[str | None] = []  # the bridge each RELEASE may be written on
        self.claims: dict[str, bytes] = {}
        self.fail_acquire: CNIError | None = None
        self.fail_release: CNIError | None = None
        self.server = ipaddress.IPv4Address("192.168.77.1")

    def claim_client_id(self, key: str, usual: bytes, per_sandbox: bytes) -> bytes:
        self.claims[key] = usual
        return usual

    def unclaim(self, key: str) -> None:
        self.claims.pop(key, None)

    async def acquire(self, req: LeaseRequest) -> Lease:
        if self.fail_acquire is not None:
            raise self.fail_acquire
        lease = Lease(
            key=req.key,
            address=ipaddress.IPv4Interface("192.168.77.148/24"),
            server_id=self.server,
            router=ipaddress.IPv4Address("192.168.77.1"),
            dns_servers=(ipaddress.IPv4Address("192.168.77.1"),),
            domain="lan",
            search=(),
            mtu=None,
            routes=(),
            lease_time=3600.0,
            t1=1800.0,
            t2=3150.0,
            bound_at=0.0,
            renew_at=1800.0,
            rebind_at=3150.0,
            expires_at=3600.0,
            state=BOUND,
            netns_path=req.netns_path,
            netns_inode=0,
            ifname=req.ifname,
            mac=req.mac,
            client_id=req.client_id,
            hostname=req.hostname,
        )
        self.held[req.key] = lease
        return lease

    async def release(self, key: str, *, from_bridge: str | None = None) -> bool:
        if self.fail_release is not None:
            raise self.fail_release
        self.released.append(key)
        self.released_on.append(from_bridge)
        return self.held.pop(key, None) is not None

    def get(self, key: str) -> Lease | None:
        return self.held.get(key)

    def leases(self) -> list[Lease]:
        return list(self.held.values())


class FakeFirewall:
    def __init__(self) -> None:
        self.backends: list[Any] = []
        self.pods: dict[tuple[str, str, str], PodRules] = {}
        self.bridges: set[str] = set()
        self.fail_add: CNIError | None = None
        self.fail_del: CNIError | None = None

    def ensure_bridge(self, bridge: str) -> None:
        self.bridges.add(bridge)

    def remove_bridge(self, bridge: str) -> None:
        self.bridges.discard(bridge)

    def add_pod(self, pod: PodRules) -> None:
        if self.fail_add is not None:
            raise self.fail_add
        self.pods[(pod.network, pod.container_id, pod.ifname)] = pod

    def del_pod(self, network: str, container_id: str, ifname: str) -> None:
        if self.fail_del is not None:
            raise self.fail_del
        self.pods.pop((network, container_id, ifname), None)

    def check_pod(self, pod: PodRules) -> list[str]:
        return [] if (pod.network, pod.container_id, pod.ifname) in self.pods else ["pod"]

    def gc(self, network: str, keep: set[tuple[str, str]]) -> list[tuple[str, str]]:
        return []

    def reassert(self, pods: Any) -> list[str]:
        return []


class FailingStore(AttachmentStore):
    """The real store; ``fail_put_at``: the n-th put (1-based) fails as a full disk does."""

    fail_put_at: int | None = None
    puts = 0

    def put(self, att: Attachment) -> None:
        self.puts += 1
        if self.puts == self.fail_put_at:
            raise CNIError(ErrorCode.STATE_FAILED, "cannot write state file: No space left")
        super().put(att)


class FakeServices:
    veths: VethReaper

    def __init__(self, state_dir: Path) -> None:
        self.store = FailingStore(state_dir)
        self.addressbook = AddressBook(state_dir)
        self.fw = FakeFirewall()
        self.firewall = FirewallRegistry(self.store, make=lambda requested: self.fw)
        self.fake_leases = FakeLeases()
        # real, and idle: no DHCPv6 on these LANs (nothing to release, no packets)
        self.leases6 = Lease6Manager(state_dir)
        self.fail_datapath: CNIError | None = None

    @property
    def leases(self) -> Any:
        return self.fake_leases

    async def ensure_datapath(self, conf: NetConf) -> Datapath:
        if self.fail_datapath is not None:
            raise self.fail_datapath
        return Datapath(
            bridge_index=7,
            bridge_mac="aa:bb:cc:00:00:01",
            node_ip=ipaddress.IPv4Address("192.168.77.2"),
            uplink="eth0",
            mtu=1500,
        )

    async def bridge_index(self, name: str) -> int | None:
        return 7

    async def uplink_problem(self, conf: NetConf, *, before_takeover_ok: bool = False) -> None:
        return None


class FakeLinks:
    """The pod's links as setup_veth / configure_pod / delete_pod_link would leave them."""

    def __init__(self, netns_file: Path) -> None:
        self.netns_file = netns_file
        self.veths: set[str] = set()
        self.addressed: list[PodAddressing] = []
        self.fail_veth: CNIError | None = None
        self.fail_configure: CNIError | None = None
        self.open_fds: set[int] = set()

    def open_pod_netns(self, req: Request, *, required: bool) -> int:
        fd = os.open(self.netns_file, os.O_RDONLY)
        self.open_fds.add(fd)
        return fd

    def setup_veth(self, netns_fd: int, spec: VethSpec, host_name: str) -> VethInfo:
        if self.fail_veth is not None:
            raise self.fail_veth
        self.veths.add(host_name)
        return VethInfo(
            host_name, 10, "aa:bb:cc:00:00:02", spec.ifname, 2, "02:00:00:00:00:01", 1500
        )

    def configure_pod(self, netns_fd: int, ifname: str, addressing: PodAddressing) -> None:
        if self.fail_configure is not None:
            raise self.fail_configure
        self.addressed.append(addressing)

    def delete_pod_link(self, netns_fd: int | None, ifname: str, host_name: str | None) -> bool:
        if host_name is None:
            return False
        found = host_name in self.veths
        self.veths.discard(host_name)
        return found

    def delete_host_links(self, names: Sequence[str]) -> dict[str, bool | BaseException]:
        return {name: self.delete_pod_link(None, "eth0", name) for name in names}

    def fds_still_open(self) -> list[int]:
        still = []
        for fd in self.open_fds:
            try:
                os.fstat(fd)
                still.append(fd)
            except OSError:
                pass
        return still


@pytest.fixture
def services(tmp_path: Path) -> FakeServices:
    return FakeServices(tmp_path / "state")


@pytest.fixture
def links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, services: FakeServices
) -> Iterator[FakeLinks]:
    netns_file = tmp_path / "netns"
    netns_file.write_text("")
    fake = FakeLinks(netns_file)
    monkeypatch.setattr(common, "open_pod_netns", fake.open_pod_netns)
    monkeypatch.setattr(main_role, "setup_veth", fake.setup_veth)
    monkeypatch.setattr(main_role, "configure_pod", fake.configure_pod)
    monkeypatch.setattr(main_role, "delete_pod_link", fake.delete_pod_link)
    services.veths = VethReaper(fake.delete_host_links, fake.delete_pod_link)
    monkeypatch.setattr(slaac_step, "wait_slaac", lambda *_: None)  # a LAN without RAs
    monkeypatch.setattr(dhcpv6_step.podaddr, "ra_flags", lambda *_: 0)
    monkeypatch.setattr(dhcpv6_step, "ra_wait_for", lambda *_: 0.0)
    yield fake
    assert fake.fds_still_open() == [], "a handler leaked the pod netns fd"


def _add(services: FakeServices, raw: dict[str, Any] | None = None) -> dict[str, Any]:
    return asyncio.run(main_role.cmd_add(services, _request("ADD", raw)))  # type: ignore[arg-type]


def _del(services: FakeServices) -> dict[str, Any]:
    return asyncio.run(main_role.cmd_del(services, _request("DEL")))  # type: ignore[arg-type]


def _nothing_left(services: FakeServices, links: FakeLinks) -> None:
    assert services.store.all() == []
    assert services.fake_leases.held == {}
    assert services.fake_leases.claims == {}
    assert services.fw.pods == {}
    assert links.veths == set()


def test_add_then_del_leaves_nothing(services: FakeServices, links: FakeLinks) -> None:
    result = _add(services)
    assert result["ips"][0]["address"] == "192.168.77.148/24"
    [att] = services.store.all()
    assert att.state is AttachmentState.READY and att.cni_result == result
    assert att.firewall is not None and att.firewall.backend == "auto"
    assert links.veths == {att.host_veth} and KEY in services.fake_leases.held
    assert (("lan", "c1", "eth0")) in services.fw.pods
    assert _del(services) == {}
    assert services.fake_leases.released == [KEY]
    # the pod's port is on our bridge: its RELEASE may be written there
    assert services.fake_leases.released_on == [att.bridge] and att.bridge
    _nothing_left(services, links)
    assert _del(services) == {}  # DEL is idempotent


def _fail_datapath(s: FakeServices, links: FakeLinks) -> None:
    s.fail_datapath = CNIError(ErrorCode.UPLINK_FAILED, "uplink eth9 not found")


def _fail_veth(s: FakeServices, links: FakeLinks) -> None:
    links.fail_veth = CNIError(ErrorCode.IO_FAILURE, "veth: File exists")


def _fail_lease(s: FakeServices, links: FakeLinks) -> None:
    s.fake_leases.fail_acquire = CNIError(ErrorCode.DHCP_TIMEOUT, "no DHCP offer")


def _fail_addressing(s: FakeServices, links: FakeLinks) -> None:
    links.fail_configure = CNIError(ErrorCode.IO_FAILURE, "route: Network unreachable")


def _fail_firewall(s: FakeServices, links: FakeLinks) -> None:
    s.fw.fail_add = CNIError(ErrorCode.FIREWALL_FAILED, "iptables: chain missing")


def _fail_record(s: FakeServices, links: FakeLinks) -> None:
    s.store.fail_put_at = 2  # the "ready" write; the first is the pending record


@pytest.mark.parametrize(
    ("fail", "code", "leased"),
    [
        (_fail_datapath, ErrorCode.UPLINK_FAILED, False),
        (_fail_veth, ErrorCode.IO_FAILURE, False),
        (_fail_lease, ErrorCode.DHCP_TIMEOUT, False),
        (_fail_addressing, ErrorCode.IO_FAILURE, True),
        (_fail_firewall, ErrorCode.FIREWALL_FAILED, True),
        (_fail_record, ErrorCode.STATE_FAILED, True),
    ],
    ids=["datapath", "veth", "lease", "addressing", "firewall", "record"],
)
def test_a_failed_add_step_undoes_what_came_before(
    services: FakeServices, links: FakeLinks, fail: Any, code: ErrorCode, leased: bool
) -> None:
    fail(services, links)
    with pytest.raises(CNIError) as err:
        _add(services)
    assert err.value.code == code
    # a lease that was granted went back to the server; none was released otherwise
    assert services.fake_leases.released == ([KEY] if leased else [])
    _nothing_left(services, links)


def test_a_server_outside_the_allow_list_is_released(
    services: FakeServices, links: FakeLinks
) -> None:
    with pytest.raises(CNIError) as err:
        _add(services, _conf(serverAllowList=["192.168.77.254"]))
    assert err.value.code == ErrorCode.INVALID_CONFIG
    assert "192.168.77.1" in err.value.msg
    assert services.fake_leases.released == [KEY]
    _nothing_left(services, links)


def test_an_undo_step_that_fails_leaves_the_record_pending(
    services: FakeServices, links: FakeLinks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As under fd exhaustion: the veth cannot be deleted; the record (pending) is how
    the cleanups find it, and the other undo steps still ran."""
    _fail_firewall(services, links)

    def emfile_at_undo_veth(point: str) -> None:
        # What CNI_BRIDGE_DHCP_FAIL=undo:veth does (runtime/faults.py, read at import).
        if point == "undo:veth":
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(main_role, "maybe_fail", emfile_at_undo_veth)
    with pytest.raises(CNIError) as err:
        _add(services)
    assert err.value.code == ErrorCode.FIREWALL_FAILED  # the step's error, not the undo's
    [att] = services.store.all()
    assert att.state is AttachmentState.PENDING
    assert links.veths == {att.host_veth}
    assert services.fake_leases.released == [KEY] and services.fake_leases.held == {}
    # the cleanup's teardown finishes the job once descriptors are back
    asyncio.run(common.teardown(services, att, None, None))  # type: ignore[arg-type]
    _nothing_left(services, links)


def test_a_failed_rule_removal_keeps_the_record_for_a_retried_del(
    services: FakeServices, links: FakeLinks
) -> None:
    _add(services)
    services.fw.fail_del = CNIError(ErrorCode.FIREWALL_FAILED, "nft: busy")
    with pytest.raises(CNIError) as err:
        _del(services)
    assert err.value.code == ErrorCode.FIREWALL_FAILED
    assert "firewall" in err.value.msg
    # the other steps ran regardless; the record stays for the retry
    assert services.fake_leases.released == [KEY] and links.veths == set()
    assert [a.key for a in services.store.all()] == [KEY]
    services.fw.fail_del = None
    assert _del(services) == {}
    _nothing_left(services, links)


def test_a_failed_release_keeps_its_code_and_the_record(
    services: FakeServices, links: FakeLinks
) -> None:
    _add(services)
    services.fake_leases.fail_release = CNIError(ErrorCode.STATE_FAILED, "lease journal: EROFS")
    with pytest.raises(CNIError) as err:
        _del(services)
    assert err.value.code == ErrorCode.STATE_FAILED
    assert links.veths == set() and services.fw.pods == {}
    assert [a.key for a in services.store.all()] == [KEY]
    services.fake_leases.fail_release = None
    _del(services)
    _nothing_left(services, links)
