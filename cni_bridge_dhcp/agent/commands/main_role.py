"""ADD / DEL / CHECK / GC / STATUS orchestration. Each step lives in its own module.

ADD keeps an undo stack: if any step fails, what earlier steps took is released in
reverse order and nothing of the pod remains. DEL is best-effort and idempotent and
releases the lease BEFORE the pod link goes, so the RELEASE leaves from the pod's own
address and MAC.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ...cni.errors import CNIError, ErrorCode
from ..config import NetConf, check_args, choose_mac, parse_netconf
from ..datapath.bridge import veth_mtu
from ..datapath.gateway import ensure_bridge_addresses, plan_gateways
from ..datapath.netns import netns_inode
from ..datapath.podroutes import PodAddressing, PodRoute, configure_pod, plan_routes, pod_state
from ..datapath.slaac import SlaacAddress, ra_wait_for
from ..datapath.veth import (
    VethInfo,
    VethSpec,
    delete_pod_link,
    host_veth_state,
    new_host_name,
    setup_veth,
)
from ..dhcp import EXPIRED, stable_mac_for
from ..firewall.registry import pod_rules
from ..runtime.faults import maybe_crash, maybe_fail
from ..state.attachments import (
    Attachment,
    AttachmentState,
    DelegatedIpam,
    FirewallChoice,
    attachment_key,
)
from .common import (
    acquire,
    claim_identity,
    delegate_ipam,
    lease_dns,
    new_attachment,
    pod_netns,
    pod_netns_if_there,
    static_routes,
    teardown,
)
from .dhcpv6_step import dhcpv6_add, dhcpv6_drift, wants_dhcpv6
from .prevresult import parse_prev_result
from .slaac_step import find_slaac, ipv6_on, slaac_add, slaac_sysctls
from .types import Datapath, Request, Services

# Request and Datapath lived here before types.py; kept importable from here.
__all__ = ["Datapath", "Request", "cmd_add", "cmd_check", "cmd_del", "cmd_gc", "cmd_status"]

log = logging.getLogger(__name__)

Undo = Callable[[], Awaitable[None]]


# ---------------------------------------------------------------- ADD


async def cmd_add(services: Services, req: Request) -> dict[str, Any]:
    conf = parse_netconf(req.raw)
    check_args(conf, req.args)
    try:
        with pod_netns(req) as netns_fd:
            return await _add(services, req, conf, netns_fd)
    finally:
        if conf.ipam is not None and conf.ipam.is_ours:
            services.leases.unclaim(attachment_key(conf.name, req.container_id, req.ifname))


async def _add(services: Services, req: Request, conf: NetConf, netns_fd: int) -> dict[str, Any]:
    key = attachment_key(conf.name, req.container_id, req.ifname)
    stale = services.store.get(key)
    if stale is not None:
        log.warning("ADD %s: replacing a stale record of %s", req.container_id, key)
        await teardown(services, stale, None, conf)

    datapath = await services.ensure_datapath(conf)
    fw = await services.firewall.firewall_for(conf.firewall_backend)
    await services.firewall.run(fw.ensure_bridge, conf.bridge)

    mac = choose_mac(conf, req.args)
    pod_ns = req.args.get("K8S_POD_NAMESPACE")
    pod_name = req.args.get("K8S_POD_NAME")
    ours = conf.ipam is not None and conf.ipam.is_ours
    if mac is None and ours and conf.ipam is not None and conf.ipam.stable_mac:
        # Claims the DHCP identity now: a second live sandbox of the pod needs its own MAC.
        _, per_sandbox = claim_identity(services, req, conf.name, key)
        mac = stable_mac_for(
            pod_ns, pod_name, req.container_id, conf.name, req.ifname, per_sandbox=per_sandbox
        )

    att = new_attachment(
        req,
        conf.name,
        netns_fd,
        bridge=conf.bridge,
        host_veth=new_host_name(),
        ipam="" if conf.ipam is None else ("dhcp" if ours else conf.ipam.type),
        uplink=datapath.uplink,
    )
    att.firewall = FirewallChoice(
        ip_masq=conf.ip_masq,
        macspoofchk=conf.macspoofchk,
        port_isolation=conf.port_isolation,
        backend=conf.firewall_backend,
    )
    if conf.ipam is not None and not ours:
        att.delegate = DelegatedIpam(conf=req.raw, cni_path=req.cni_path, cni_args=req.cni_args)
    await asyncio.to_thread(services.store.put, att)
    undo: list[Undo] = []

    async def drop_record() -> None:
        await asyncio.to_thread(services.store.remove, key)

    undo.append(drop_record)
    ok = False
    try:
        maybe_crash("add:pending")
        spec = VethSpec(
            ifname=req.ifname,
            bridge_index=datapath.bridge_index,
            mac=mac,
            mtu=veth_mtu(conf.mtu, datapath.mtu, conf.bridge) if datapath.mtu else conf.mtu,
            host_mtu=datapath.mtu,
            hairpin=conf.hairpin_mode,
            isolated=conf.port_isolation,
            enable_dad=conf.enabledad,
            bring_up=not conf.disable_container_interface,
            ipv6_sysctls=slaac_sysctls(conf),
        )
        veth = await asyncio.to_thread(setup_veth, netns_fd, spec, att.host_veth)
        up_at = time.monotonic()

        async def drop_veth() -> None:
            maybe_fail("undo:veth")
            await asyncio.to_thread(delete_pod_link, netns_fd, req.ifname, veth.host_name)

        undo.append(drop_veth)
        att.mac = veth.pod_mac
        maybe_crash("add:veth")

        addressing, dns = await _ipam_add(
            services, req, conf, att, veth.pod_mac, datapath, netns_fd, undo
        )
        maybe_crash("add:lease")
        if addressing is not None:
            slaac, dhcpv6 = await asyncio.to_thread(
                _configure_then_look_for_ipv6,
                conf,
                netns_fd,
                req.ifname,
                addressing,
                up_at,
                datapath.lan_ras,
            )
            addressing = await slaac_add(conf, req.ifname, netns_fd, addressing, slaac)
            addressing, dns = await dhcpv6_add(
                services, conf, req, key, netns_fd, addressing, dns, undo, dhcpv6
            )
        maybe_crash("add:routes")

        att.ips = [str(a) for a in addressing.addresses] if addressing else []
        rules = pod_rules(att)
        await services.firewall.run(fw.add_pod, rules)

        async def drop_rules() -> None:
            await services.firewall.run(fw.del_pod, conf.name, req.container_id, req.ifname)

        undo.append(drop_rules)
        maybe_crash("add:rules")

        result = _result(conf, datapath, veth, req.netns, addressing, dns)
        att.state = AttachmentState.READY
        att.ips = [str(a) for a in addressing.addresses] if addressing else []
        att.cni_result = result
        await asyncio.to_thread(services.store.put, att)
        ok = True
        return result
    finally:
        if not ok:
            undone = True
            for step in reversed(undo):
                if step is drop_record and not undone:
                    # The record (still "pending") is how the start-up and periodic
                    # cleanups find what is left: never drop it over remains.
                    log.warning(
                        "ADD %s: undo incomplete; %s stays pending for the cleanup",
                        req.container_id,
                        key,
                    )
                    continue
                try:
                    await step()
                except Exception:
                    undone = False
                    log.exception("ADD %s: undo step failed", req.container_id)


def _configure_then_look_for_ipv6(
    conf: NetConf,
    netns_fd: int,
    ifname: str,
    addressing: PodAddressing,
    up_at: float,
    lan_ras: bool,
) -> tuple[SlaacAddress | None, bool]:
    """The pod's IPv4 addressing, then what IPv6 its LAN offers (SLAAC address, whether to
    ask DHCPv6): one worker-thread trip for what were four (~0.15 ms of CPU each)."""
    configure_pod(netns_fd, ifname, addressing)
    if conf.ipam is None or not ipv6_on(conf):
        return None, False
    ra_wait = ra_wait_for(conf.bridge, lan_ras)
    slaac = find_slaac(netns_fd, ifname, up_at, conf.ipam.timeout, ra_wait)
    return slaac, wants_dhcpv6(conf, netns_fd, ifname, up_at, lan_ras, ra_wait)


async def _ipam_add(
    services: Services,
    req: Request,
    conf: NetConf,
    att: Attachment,
    pod_mac: str,
    datapath: Datapath,
    netns_fd: int,
    undo: list[Undo],
) -> tuple[PodAddressing | None, dict[str, Any]]:
    if conf.ipam is None:
        return None, {}
    static = static_routes(conf.ipam.routes)
    if conf.ipam.is_ours:
        ipam = conf.ipam
        lease = await acquire(
            services, ipam, req, conf.name, att.key, netns_fd, pod_mac, bridge=conf.bridge
        )

        async def release() -> None:
            await services.leases.release(att.key)

        undo.append(release)
        if ipam.server_allow_list and lease.server_id not in ipam.server_allow_list:
            raise CNIError(
                ErrorCode.INVALID_CONFIG,
                f"DHCP server {lease.server_id} is not in ipam.serverAllowList",
            )
        routes, gateway = plan_routes(
            conf.default_route,
            datapath.node_ip,
            lease.router,
            lease.routes,
            static,
            subnet=lease.address.network,
        )
        mtu = (
            lease.mtu
            if (
                lease.mtu
                and conf.mtu is None
                and (datapath.mtu is None or lease.mtu <= datapath.mtu)
            )
            else None
        )
        addressing = PodAddressing(
            addresses=(lease.address,), routes=routes, gateway=gateway, mtu=mtu
        )
        return addressing, lease_dns(lease)

    ipam_type = conf.ipam.type
    result = await delegate_ipam("ADD", ipam_type, req)

    async def ipam_del() -> None:
        await delegate_ipam("DEL", ipam_type, req)

    undo.append(ipam_del)
    addresses = tuple(ipaddress.ip_interface(ip["address"]) for ip in result.get("ips", []))
    if not addresses:
        raise CNIError(
            ErrorCode.IPAM_DELEGATE_FAILED, f"ipam plugin {conf.ipam.type} returned no IP"
        )
    ipam_routes = tuple(
        PodRoute(
            ipaddress.ip_network(r["dst"], strict=False),
            ipaddress.ip_address(r["gw"]) if r.get("gw") else None,
        )
        for r in result.get("routes", [])
    )
    plan = plan_gateways(
        addresses,
        tuple(
            ipaddress.ip_address(ip["gateway"]) if ip.get("gateway") else None
            for ip in result.get("ips", [])
        ),
        ipam_routes,
        is_gateway=conf.is_gateway,
        is_default_gateway=conf.is_default_gateway,
    )
    await asyncio.to_thread(
        ensure_bridge_addresses, conf.bridge, plan.bridge_addresses, conf.force_address
    )
    ipam_routes = ipam_routes + plan.extra_routes
    router = next((gw for gw in plan.gateways if gw is not None), None)
    # isGateway makes the bridge (the node) the pods' gateway: "node" mode can use it.
    node_ip = datapath.node_ip or next(
        (a.ip for a in plan.bridge_addresses if isinstance(a, ipaddress.IPv4Interface)), None
    )
    non_default = tuple(r for r in ipam_routes if r.dst.prefixlen != 0)
    if "default_route" not in conf.model_fields_set:
        # A reference conflist (no defaultRoute) gets the reference's routes: the IPAM's,
        # plus isDefaultGateway's default; nothing of ours is added or dropped.
        routes, gateway = ipam_routes, router
    elif conf.default_route == "dhcp" or conf.is_default_gateway:
        # isDefaultGateway asks for the reference's route: default via the IPAM gateway.
        routes = ipam_routes + static
        gateway = router
        if router is not None and not any(r.dst.prefixlen == 0 for r in ipam_routes):
            routes = (*routes, PodRoute(ipaddress.ip_network("0.0.0.0/0"), router))
    else:
        router4 = router if isinstance(router, ipaddress.IPv4Address) else None
        routes, gateway = plan_routes(
            conf.default_route, node_ip, router4, (), non_default + static
        )
    addressing = PodAddressing(
        addresses=addresses, routes=routes, gateway=gateway, ip_gateways=plan.gateways
    )
    return addressing, dict(result.get("dns") or {})


def _result(
    conf: NetConf,
    datapath: Datapath,
    veth: VethInfo,
    netns_path: str,
    addressing: PodAddressing | None,
    dns: dict[str, Any],
) -> dict[str, Any]:
    interfaces: list[dict[str, Any]] = [
        {"name": conf.bridge, "mac": datapath.bridge_mac},
        {"name": veth.host_name, "mac": veth.host_mac},
        {"name": veth.pod_name, "mac": veth.pod_mac, "sandbox": netns_path, "mtu": veth.mtu},
    ]
    result: dict[str, Any] = {"cniVersion": "1.1.0", "interfaces": interfaces}
    if addressing is not None:
        gateways = addressing.ip_gateways or tuple(
            addressing.gateway
            if addressing.gateway and addressing.gateway.version == a.version
            else addressing.gateway6
            if addressing.gateway6 and a.version == 6
            else None
            for a in addressing.addresses
        )
        result["ips"] = [
            {"address": str(a), "interface": 2, **({"gateway": str(gw)} if gw else {})}
            for a, gw in zip(addressing.addresses, gateways, strict=True)
        ]
        result["routes"] = [r.to_result() for r in addressing.routes]
    conf_dns = conf.dns.model_dump(exclude_defaults=True)
    chosen = conf_dns if conf_dns else {k: v for k, v in dns.items() if v}
    if chosen:
        result["dns"] = chosen
    return result


# ---------------------------------------------------------------- DEL


async def cmd_del(services: Services, req: Request) -> dict[str, Any]:
    conf = parse_netconf(req.raw, check_unimplemented=False)
    key = attachment_key(conf.name, req.container_id, req.ifname)
    with pod_netns_if_there(req) as netns_fd:
        att = services.store.get(key)
        if att is not None:
            # a path that now names another namespace is as good as gone
            same = netns_fd is not None and netns_inode(netns_fd) == att.netns_inode
            await teardown(services, att, netns_fd if same else None, conf)
        else:
            await _del_unrecorded(services, req, conf, key, netns_fd)
    return {}


async def _del_unrecorded(
    services: Services, req: Request, conf: NetConf, key: str, netns_fd: int | None
) -> None:
    """DEL of something we hold no record of (never added, or its record was lost): clean
    what may exist, succeed otherwise. As the reference bridge plugin, the interface named
    by CNI_IFNAME in the pod goes; its host end goes with it."""
    if services.leases.get(key) is not None:
        await services.leases.release(key)
    if services.leases6.get(key) is not None:
        await services.leases6.release(key)
    if netns_fd is not None:
        await asyncio.to_thread(delete_pod_link, netns_fd, req.ifname, None)
    if conf.ipam is not None and not conf.ipam.is_ours and req.cni_path:
        with contextlib.suppress(CNIError):
            await delegate_ipam("DEL", conf.ipam.type, req, in_pod=netns_fd is not None)
    await services.firewall.remove_pod_rules(conf.name, req.container_id, req.ifname)


# ---------------------------------------------------------------- CHECK


async def cmd_check(services: Services, req: Request) -> dict[str, Any]:
    conf = parse_netconf(req.raw)
    key = attachment_key(conf.name, req.container_id, req.ifname)
    if conf.prev_result is None:
        raise CNIError(ErrorCode.INVALID_CONFIG, "CHECK needs prevResult in the network config")
    prev = parse_prev_result(conf.prev_result)
    att = services.store.get(key)
    if att is None or att.state != AttachmentState.READY:
        raise CNIError(ErrorCode.CHECK_DRIFT, f"no attachment {key} is known to the agent")
    drift: list[str] = []
    with pod_netns(req) as netns_fd:
        mac, addrs, routes = await asyncio.to_thread(pod_state, netns_fd, req.ifname)
    if mac is None:
        raise CNIError(ErrorCode.CHECK_DRIFT, f"interface {req.ifname} is missing in {req.netns}")
    for iface in prev.interfaces:
        if (
            iface.sandbox
            and iface.name == req.ifname
            and iface.mac.lower() not in ("", mac.lower())
        ):
            drift.append(f"{req.ifname} MAC is {mac}, expected {iface.mac}")
    for address in prev.ips:
        if address not in addrs:
            drift.append(f"address {address} missing on {req.ifname}")
    for dst, gw in prev.routes:
        if (dst, gw) not in routes and not (gw is None and any(d == dst for d, _ in routes)):
            drift.append(f"route {dst}{' via ' + gw if gw else ''} missing in the pod")
    exists, master = await asyncio.to_thread(host_veth_state, att.host_veth)
    bridge_index = await services.bridge_index(att.bridge)
    if bridge_index is None:
        drift.append(f"bridge {att.bridge} is missing")
    if not exists:
        drift.append(f"host veth {att.host_veth} is missing")
    elif bridge_index is not None and master != bridge_index:
        drift.append(f"host veth {att.host_veth} is not attached to {att.bridge}")
    if conf.uplink_interface:
        uplink_problem = await services.uplink_problem(conf)
        if uplink_problem:
            drift.append(uplink_problem)
    if att.ipam == "dhcp":
        lease = services.leases.get(key)
        if lease is None or lease.state == EXPIRED:
            drift.append(f"no bound DHCP lease for {key}")
        drift += dhcpv6_drift(services, key)
    fw = await services.firewall.firewall_for(conf.firewall_backend)
    rules = pod_rules(att)
    missing = await services.firewall.run(fw.check_pod, rules)
    if missing:
        restored = await services.firewall.run(fw.reassert, [rules])
        drift.append(
            f"firewall rules missing: {', '.join(missing)}"
            + (" (restored by the agent)" if restored else "")
        )
    if drift:
        raise CNIError(ErrorCode.CHECK_DRIFT, f"CHECK {key}: {drift[0]}", "; ".join(drift))
    return {}


# ---------------------------------------------------------------- GC / STATUS


async def cmd_gc(services: Services, req: Request) -> dict[str, Any]:
    conf = parse_netconf(req.raw, check_unimplemented=False)
    valid: set[tuple[str, str]] = set()
    for entry in conf.valid_attachments or []:
        cid, ifname = entry.get("containerID"), entry.get("ifname")
        if not isinstance(cid, str) or not isinstance(ifname, str):
            raise CNIError(
                ErrorCode.INVALID_CONFIG,
                "cni.dev/valid-attachments entries need string containerID and ifname",
            )
        valid.add((cid, ifname))
    removed = 0
    failures: list[str] = []
    for att in services.store.for_network(conf.name):
        if (att.container_id, att.ifname) in valid:
            continue
        try:
            await teardown(services, att, None, conf)
            removed += 1
        except CNIError as exc:
            failures.append(exc.msg)
    for lease in services.leases.leases():
        network, _, rest = lease.key.partition("/")
        cid, _, ifname = rest.rpartition("/")
        if network == conf.name and (cid, ifname) not in valid:
            await services.leases.release(lease.key)
            removed += 1
    for lease6 in services.leases6.leases():
        network, _, rest = lease6.key.partition("/")
        cid, _, ifname = rest.rpartition("/")
        if network == conf.name and (cid, ifname) not in valid:
            await services.leases6.release(lease6.key)
            removed += 1
    removed += await services.firewall.gc_rules(conf.name, valid)
    log.info(
        "GC %s: removed %d stale item(s), kept %d attachment(s)", conf.name, removed, len(valid)
    )
    if failures:
        raise CNIError(ErrorCode.IO_FAILURE, f"GC incomplete: {failures[0]}", "; ".join(failures))
    return {}


async def cmd_status(services: Services, req: Request) -> dict[str, Any]:
    conf = parse_netconf(req.raw, check_unimplemented=False)
    if conf.uplink_interface:
        problem = await services.uplink_problem(conf, before_takeover_ok=True)
        if problem:
            raise CNIError(ErrorCode.STATUS_UNAVAILABLE, problem)
    return {}
