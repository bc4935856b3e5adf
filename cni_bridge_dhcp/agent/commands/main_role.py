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
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...cni.errors import CNIError, ErrorCode
from ..config import IPAMConf, NetConf, check_args, choose_mac, parse_netconf
from ..datapath.bridge import veth_mtu
from ..datapath.netns import netns_inode, open_netns, validate_netns_fd
from ..datapath.podroutes import PodAddressing, PodRoute, configure_pod, plan_routes, pod_state
from ..datapath.veth import VethSpec, delete_pod_link, host_veth_state, new_host_name, setup_veth
from ..dhcp.identity import dns_label, option_code
from ..runtime.faults import maybe_crash, maybe_fail
from ..state.attachments import Attachment, attachment_key
from .prevresult import parse_prev_result

if TYPE_CHECKING:
    from ..service import Agent

log = logging.getLogger(__name__)

Undo = Callable[[], Awaitable[None]]


@dataclass
class Request:
    op: str
    cni_version: str
    container_id: str
    netns: str
    ifname: str
    cni_path: str
    args: dict[str, str]
    raw: dict[str, Any]
    netns_fd: int | None = None
    role: str = "main"

    @property
    def cni_args(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.args.items())


def _open_pod_netns(req: Request, *, required: bool) -> int | None:
    """The pod netns fd (passed by the plugin, else opened by path); None if gone and not required."""
    if req.netns_fd is not None:
        fd, req.netns_fd = req.netns_fd, None
        return validate_netns_fd(fd, req.netns)
    if not req.netns:
        if required:
            raise CNIError(ErrorCode.INVALID_ENV, "CNI_NETNS is not set")
        return None
    try:
        return open_netns(req.netns)
    except FileNotFoundError:
        if required:
            raise CNIError(
                ErrorCode.INVALID_ENV, f"CNI_NETNS {req.netns!r} does not exist"
            ) from None
        return None


async def _thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


# ---------------------------------------------------------------- ADD


async def cmd_add(agent: Agent, req: Request) -> dict[str, Any]:
    conf = parse_netconf(req.raw)
    check_args(conf, req.args)
    netns_fd = _open_pod_netns(req, required=True)
    assert netns_fd is not None
    try:
        result = await _add(agent, req, conf, netns_fd)
    finally:
        os.close(netns_fd)
        if conf.ipam is not None and conf.ipam.is_ours:
            agent.leases.unclaim(attachment_key(conf.name, req.container_id, req.ifname))
    return result


async def _add(agent: Agent, req: Request, conf: NetConf, netns_fd: int) -> dict[str, Any]:
    key = attachment_key(conf.name, req.container_id, req.ifname)
    stale = agent.store.get(key)
    if stale is not None:
        log.warning("ADD %s: replacing a stale record of %s", req.container_id, key)
        await teardown(agent, stale, None, conf)

    datapath = await agent.ensure_datapath(conf)
    fw = await agent.firewall_for(conf.firewall_backend)
    await agent.in_firewall(fw.ensure_bridge, conf.bridge)

    mac = choose_mac(conf, req.args)
    pod_ns = req.args.get("K8S_POD_NAMESPACE")
    pod_name = req.args.get("K8S_POD_NAME")
    ours = conf.ipam is not None and conf.ipam.is_ours
    if mac is None and ours and conf.ipam is not None and conf.ipam.stable_mac:
        from ..dhcp import stable_mac_for

        # Claims the DHCP identity now: a second live sandbox of the pod needs its own MAC.
        _, per_sandbox = claim_identity(agent, req, conf.name, key)
        mac = stable_mac_for(
            pod_ns, pod_name, req.container_id, conf.name, req.ifname, per_sandbox=per_sandbox
        )

    att = Attachment(
        network=conf.name,
        container_id=req.container_id,
        ifname=req.ifname,
        netns=req.netns,
        netns_inode=netns_inode(netns_fd),
        bridge=conf.bridge,
        host_veth=new_host_name(),
        ipam="" if conf.ipam is None else ("dhcp" if ours else conf.ipam.type),
        pod_namespace=pod_ns or "",
        pod_name=pod_name or "",
        uplink=datapath.uplink,
        created=time.time(),
    )
    att.result["fw"] = {
        "ipMasq": conf.ip_masq,
        "macspoofchk": conf.macspoofchk,
        "portIsolation": conf.port_isolation,
        "backend": conf.firewall_backend,
    }
    if conf.ipam is not None and not ours:
        att.result["delegate"] = {"conf": req.raw, "cniPath": req.cni_path, "cniArgs": req.cni_args}
    await _thread(agent.store.put, att)
    undo: list[Undo] = []

    async def drop_record() -> None:
        await _thread(agent.store.remove, key)

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
        )
        veth = await _thread(setup_veth, netns_fd, spec, att.host_veth)

        async def drop_veth() -> None:
            maybe_fail("undo:veth")
            await _thread(delete_pod_link, netns_fd, req.ifname, veth.host_name)

        undo.append(drop_veth)
        att.mac = veth.pod_mac
        maybe_crash("add:veth")

        addressing, dns = await _ipam_add(
            agent, req, conf, att, veth.pod_mac, datapath, netns_fd, undo
        )
        maybe_crash("add:lease")
        if addressing is not None:
            await _thread(configure_pod, netns_fd, req.ifname, addressing)
        maybe_crash("add:routes")

        att.ips = [str(a) for a in addressing.addresses] if addressing else []
        rules = agent.pod_rules(att)
        await agent.in_firewall(fw.add_pod, rules)

        async def drop_rules() -> None:
            await agent.in_firewall(fw.del_pod, conf.name, req.container_id, req.ifname)

        undo.append(drop_rules)
        maybe_crash("add:rules")

        result = _result(conf, datapath, veth, req.netns, addressing, dns)
        att.state = "ready"
        att.ips = [str(a) for a in addressing.addresses] if addressing else []
        att.result = {**att.result, "cni": result}
        await _thread(agent.store.put, att)
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


@dataclass(frozen=True)
class Datapath:
    bridge_index: int
    bridge_mac: str
    node_ip: ipaddress.IPv4Address | None
    uplink: str | None
    mtu: int | None


async def _ipam_add(
    agent: Agent,
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
    static = tuple(
        PodRoute(
            ipaddress.ip_network(r.dst, strict=False), ipaddress.ip_address(r.gw) if r.gw else None
        )
        for r in conf.ipam.routes
    )
    if conf.ipam.is_ours:
        ipam = conf.ipam
        lease = await acquire(
            agent, ipam, req, conf.name, att.key, netns_fd, pod_mac, bridge=conf.bridge
        )

        async def release() -> None:
            await agent.leases.release(att.key)

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
        dns: dict[str, Any] = {
            "nameservers": [str(s) for s in lease.dns_servers],
            "domain": lease.domain or "",
            "search": list(lease.search),
        }
        return addressing, dns

    from .delegate import exec_ipam

    ipam_type = conf.ipam.type

    async def delegate(command: str) -> dict[str, Any]:
        return await exec_ipam(
            command,
            ipam_type,
            req.raw,
            container_id=req.container_id,
            netns=req.netns,
            ifname=req.ifname,
            cni_args=req.cni_args,
            cni_path=req.cni_path,
        )

    result = await delegate("ADD")

    async def ipam_del() -> None:
        await delegate("DEL")

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
    router = next(
        (ipaddress.ip_address(ip["gateway"]) for ip in result.get("ips", []) if ip.get("gateway")),
        None,
    )
    non_default = tuple(r for r in ipam_routes if r.dst.prefixlen != 0)
    if conf.default_route == "dhcp":
        routes = ipam_routes + static
        gateway = router
        if router is not None and not any(r.dst.prefixlen == 0 for r in ipam_routes):
            routes = (*routes, PodRoute(ipaddress.ip_network("0.0.0.0/0"), router))
    else:
        router4 = router if isinstance(router, ipaddress.IPv4Address) else None
        routes, gateway = plan_routes(
            conf.default_route, datapath.node_ip, router4, (), non_default + static
        )
    return PodAddressing(addresses=addresses, routes=routes, gateway=gateway), dict(
        result.get("dns") or {}
    )


def _result(
    conf: NetConf,
    datapath: Datapath,
    veth: Any,
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
        result["ips"] = [
            {
                "address": str(a),
                "interface": 2,
                **(
                    {"gateway": str(addressing.gateway)}
                    if addressing.gateway and addressing.gateway.version == a.version
                    else {}
                ),
            }
            for a in addressing.addresses
        ]
        result["routes"] = [r.to_result() for r in addressing.routes]
    conf_dns = conf.dns.model_dump(exclude_defaults=True)
    chosen = conf_dns if conf_dns else {k: v for k, v in dns.items() if v}
    if chosen:
        result["dns"] = chosen
    return result


def lease_request(
    ipam: IPAMConf,
    req: Request,
    network: str,
    key: str,
    netns_fd: int,
    mac: str,
    prefer: ipaddress.IPv4Address | None = None,
    client_id: bytes | None = None,
    bridge: str = "",
) -> Any:
    """The DHCP client's request for one attachment, identity derived from the pod
    (``client_id``: the one claim_identity chose)."""
    from ..dhcp import LeaseRequest, client_id_for

    pod_ns = req.args.get("K8S_POD_NAMESPACE") or None
    pod_name = req.args.get("K8S_POD_NAME") or None
    provide: list[tuple[int, bytes]] = []
    for p in ipam.provide:
        code = option_code(p.option, "ipam.provide")
        value = req.args.get(p.from_arg, "") if p.from_arg else (p.value or "")
        if value:
            provide.append((code, value.encode()))
    return LeaseRequest(
        key=key,
        netns_path=req.netns,
        netns_fd=netns_fd,
        ifname=req.ifname,
        mac=mac,
        client_id=client_id
        or client_id_for(pod_ns, pod_name, req.container_id, network, req.ifname),
        client_id_mode=ipam.client_id,
        prefer_address=prefer,
        hostname=dns_label(pod_name),
        extra_request=tuple(option_code(r.option, "ipam.request") for r in ipam.request),
        provide=tuple(provide),
        timeout=ipam.timeout,
        server_allow_list=tuple(ipam.server_allow_list),
        server_macs=tuple(ipam.server_macs.items()),
        arp_probe_wait=ipam.arp_probe_wait,
        meta={
            "network": network,
            "containerId": req.container_id,
            "podNamespace": pod_ns or "",
            "podName": pod_name or "",
            # where a RELEASE for a pod that is gone is sent from (dhcp/node_release.py)
            **({"bridge": bridge} if bridge else {}),
        },
    )


async def acquire(
    agent: Agent,
    ipam: IPAMConf,
    req: Request,
    network: str,
    key: str,
    netns_fd: int,
    mac: str,
    *,
    bridge: str = "",
) -> Any:
    """Lease an address, asking for the one this pod identity held last time (unless
    another live attachment holds it: the manager drops such a hint)."""
    client_id, _ = claim_identity(agent, req, network, key)
    try:
        prefer = agent.addressbook.get(client_id)
        lease = await agent.leases.acquire(
            lease_request(ipam, req, network, key, netns_fd, mac, prefer, client_id, bridge)
        )
    finally:
        agent.leases.unclaim(key)  # the lease (if any) holds the client id now
    await _thread(agent.addressbook.remember, client_id, lease.address.ip)
    return lease


def claim_identity(agent: Agent, req: Request, network: str, key: str) -> tuple[bytes, bool]:
    """This attachment's DHCP client id, and whether it is the per-sandbox form.

    The pod's usual identity (namespace/name/network/ifname) unless another live attachment
    holds it: two live sandboxes of one pod (re-created before the old one is torn down)
    would otherwise be one client to the server, which moves the lease between them. Then
    the container id is added; the address book key follows the client id.
    """
    from ..dhcp import client_id_for

    pod_ns = req.args.get("K8S_POD_NAMESPACE") or None
    pod_name = req.args.get("K8S_POD_NAME") or None
    usual = client_id_for(pod_ns, pod_name, req.container_id, network, req.ifname)
    alone = client_id_for(pod_ns, pod_name, req.container_id, network, req.ifname, per_sandbox=True)
    chosen: bytes = agent.leases.claim_client_id(key, usual, alone)
    return chosen, chosen != usual


# ---------------------------------------------------------------- DEL / teardown


async def teardown(
    agent: Agent, att: Attachment, netns_fd: int | None, conf: NetConf | None
) -> None:
    """Release and remove everything of one attachment; each step best-effort, missing = fine.

    A step that fails does not stop the others; the DEL then fails with the code of the
    first failure (a CNIError keeps its own, e.g. 105 for a read-only state dir) and keeps
    the record, so a retried DEL finishes the job.
    """
    failures: list[tuple[int, str]] = []

    async def step(what: str, work: Awaitable[object]) -> None:
        try:
            await work
        except CNIError as exc:
            log.error("DEL %s: %s incomplete: %s", att.key, what, exc.msg)
            failures.append((exc.code, f"{what}: {exc.msg}"))
        except Exception as exc:
            log.exception("DEL %s: %s failed", att.key, what)
            failures.append((ErrorCode.IO_FAILURE, f"{what}: {exc}"))

    fd = netns_fd
    opened = False
    if fd is None and att.netns:
        try:
            fd = open_netns(att.netns)
            opened = True
            if netns_inode(fd) != att.netns_inode:
                os.close(fd)
                fd, opened = None, False  # the path now names another namespace
        except (FileNotFoundError, CNIError):
            fd = None
    try:
        if att.ipam == "dhcp":
            await step("lease release", agent.leases.release(att.key))
        elif att.ipam:
            delegate = att.result.get("delegate", {})
            raw = delegate.get("conf") or (conf.model_dump(by_alias=True) if conf else None)
            if raw is not None:
                from .delegate import exec_ipam

                work = exec_ipam(
                    "DEL",
                    att.ipam,
                    raw,
                    container_id=att.container_id,
                    netns=att.netns if fd is not None else "",
                    ifname=att.ifname,
                    cni_args=delegate.get("cniArgs", ""),
                    cni_path=delegate.get("cniPath", ""),
                )
                await step(f"ipam {att.ipam} DEL", work)
        if att.result.get("role") != "ipam":  # as IPAM, the link and rules are not ours
            await step("veth", _thread(delete_pod_link, fd, att.ifname, att.host_veth))
            await step(
                "firewall", agent.remove_pod_rules(att.network, att.container_id, att.ifname)
            )
    finally:
        if opened and fd is not None:
            os.close(fd)
    if failures:
        detail = "; ".join(msg for _, msg in failures)
        raise CNIError(failures[0][0], f"DEL of {att.key} incomplete: {detail}")
    await _thread(agent.store.remove, att.key)
    if att.bridge:
        await agent.after_pod_removed(att.bridge)


async def cmd_del(agent: Agent, req: Request) -> dict[str, Any]:
    conf = parse_netconf(req.raw, check_unimplemented=False)
    key = attachment_key(conf.name, req.container_id, req.ifname)
    netns_fd = _open_pod_netns(req, required=False)
    try:
        att = agent.store.get(key)
        if att is not None:
            if netns_fd is not None and netns_inode(netns_fd) != att.netns_inode:
                os.close(netns_fd)
                netns_fd = None
            await teardown(agent, att, netns_fd, conf)
        else:
            await _del_unrecorded(agent, req, conf, key, netns_fd)
    finally:
        if netns_fd is not None:
            os.close(netns_fd)
    return {}


async def _del_unrecorded(
    agent: Agent, req: Request, conf: NetConf, key: str, netns_fd: int | None
) -> None:
    """DEL of something we hold no record of (never added, or its record was lost): clean
    what may exist, succeed otherwise. As the reference bridge plugin, the interface named
    by CNI_IFNAME in the pod goes; its host end goes with it."""
    if agent.leases.get(key) is not None:
        await agent.leases.release(key)
    if netns_fd is not None:
        await _thread(delete_pod_link, netns_fd, req.ifname, None)
    if conf.ipam is not None and not conf.ipam.is_ours and req.cni_path:
        from .delegate import exec_ipam

        with contextlib.suppress(CNIError):
            await exec_ipam(
                "DEL",
                conf.ipam.type,
                req.raw,
                container_id=req.container_id,
                netns=req.netns if netns_fd is not None else "",
                ifname=req.ifname,
                cni_args=req.cni_args,
                cni_path=req.cni_path,
            )
    await agent.remove_pod_rules(conf.name, req.container_id, req.ifname)


# ---------------------------------------------------------------- CHECK


async def cmd_check(agent: Agent, req: Request) -> dict[str, Any]:
    conf = parse_netconf(req.raw)
    key = attachment_key(conf.name, req.container_id, req.ifname)
    if conf.prev_result is None:
        raise CNIError(ErrorCode.INVALID_CONFIG, "CHECK needs prevResult in the network config")
    prev = parse_prev_result(conf.prev_result)
    att = agent.store.get(key)
    if att is None or att.state != "ready":
        raise CNIError(ErrorCode.CHECK_DRIFT, f"no attachment {key} is known to the agent")
    netns_fd = _open_pod_netns(req, required=True)
    assert netns_fd is not None
    drift: list[str] = []
    try:
        mac, addrs, routes = await _thread(pod_state, netns_fd, req.ifname)
    finally:
        os.close(netns_fd)
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
    exists, master = await _thread(host_veth_state, att.host_veth)
    bridge_index = await agent.bridge_index(att.bridge)
    if bridge_index is None:
        drift.append(f"bridge {att.bridge} is missing")
    if not exists:
        drift.append(f"host veth {att.host_veth} is missing")
    elif bridge_index is not None and master != bridge_index:
        drift.append(f"host veth {att.host_veth} is not attached to {att.bridge}")
    if conf.uplink_interface:
        uplink_problem = await agent.uplink_problem(conf)
        if uplink_problem:
            drift.append(uplink_problem)
    if att.ipam == "dhcp":
        lease = agent.leases.get(key)
        if lease is None or lease.state == "EXPIRED":
            drift.append(f"no bound DHCP lease for {key}")
    fw = await agent.firewall_for(conf.firewall_backend)
    rules = agent.pod_rules(att)
    missing = await agent.in_firewall(fw.check_pod, rules)
    if missing:
        restored = await agent.in_firewall(fw.reassert, [rules])
        drift.append(
            f"firewall rules missing: {', '.join(missing)}"
            + (" (restored by the agent)" if restored else "")
        )
    if drift:
        raise CNIError(ErrorCode.CHECK_DRIFT, f"CHECK {key}: {drift[0]}", "; ".join(drift))
    return {}


# ---------------------------------------------------------------- GC / STATUS


async def cmd_gc(agent: Agent, req: Request) -> dict[str, Any]:
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
    for att in agent.store.for_network(conf.name):
        if (att.container_id, att.ifname) in valid:
            continue
        try:
            await teardown(agent, att, None, conf)
            removed += 1
        except CNIError as exc:
            failures.append(exc.msg)
    for lease in agent.leases.leases():
        network, _, rest = lease.key.partition("/")
        cid, _, ifname = rest.rpartition("/")
        if network == conf.name and (cid, ifname) not in valid:
            await agent.leases.release(lease.key)
            removed += 1
    removed += await agent.gc_rules(conf.name, valid)
    log.info(
        "GC %s: removed %d stale item(s), kept %d attachment(s)", conf.name, removed, len(valid)
    )
    if failures:
        raise CNIError(ErrorCode.IO_FAILURE, f"GC incomplete: {failures[0]}", "; ".join(failures))
    return {}


async def cmd_status(agent: Agent, req: Request) -> dict[str, Any]:
    conf = parse_netconf(req.raw, check_unimplemented=False)
    if conf.uplink_interface:
        problem = await agent.uplink_problem(conf, before_takeover_ok=True)
        if problem:
            raise CNIError(ErrorCode.STATUS_UNAVAILABLE, problem)
    return {}
