"""The drop-in `dhcp` IPAM role: leases for interfaces another plugin made (macvlan, ipvlan...).

The main plugin owns the link and configures the address; we only lease, renew and
release. Unlike the reference dhcp daemon, the lease is journaled (survives an agent
restart) and released before the main plugin deletes the link.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from ...cni.errors import CNIError, ErrorCode
from ..config import IPAMConf
from ..datapath.netns import netns_inode
from ..datapath.podroutes import PodRoute, plan_routes, pod_state
from ..state.attachments import Attachment, attachment_key
from .main_role import Request, _open_pod_netns, _thread, acquire, teardown

if TYPE_CHECKING:
    from ..service import Agent

log = logging.getLogger(__name__)


def _ipam_conf(req: Request) -> tuple[str, IPAMConf]:
    from pydantic import ValidationError

    name = req.raw.get("name")
    raw = req.raw.get("ipam")
    if not isinstance(name, str) or not isinstance(raw, dict):
        raise CNIError(ErrorCode.INVALID_CONFIG, "IPAM role needs name and an ipam section")
    try:
        return name, IPAMConf.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise CNIError(
            ErrorCode.INVALID_CONFIG, f"invalid network config: ipam.{key}: {first['msg']}"
        ) from None


async def ipam_add(agent: Agent, req: Request) -> dict[str, Any]:
    network, ipam = _ipam_conf(req)
    netns_fd = _open_pod_netns(req, required=True)
    assert netns_fd is not None
    key = attachment_key(network, req.container_id, req.ifname)
    try:
        mac, _, _ = await _thread(pod_state, netns_fd, req.ifname)
        if mac is None:
            raise CNIError(
                ErrorCode.INVALID_ENV,
                f"interface {req.ifname!r} does not exist in {req.netns}",
                "as an IPAM plugin, the main plugin must create the interface first",
            )
        att = Attachment(
            network=network,
            container_id=req.container_id,
            ifname=req.ifname,
            netns=req.netns,
            netns_inode=netns_inode(netns_fd),
            bridge="",
            host_veth="",
            state="pending",
            mac=mac,
            ipam="dhcp",
            pod_namespace=req.args.get("K8S_POD_NAMESPACE", ""),
            pod_name=req.args.get("K8S_POD_NAME", ""),
            result={"role": "ipam"},
            created=time.time(),
        )
        await _thread(agent.store.put, att)
        try:
            lease = await acquire(agent, ipam, req, network, key, netns_fd, mac)
        except BaseException:
            await _thread(agent.store.remove, key)
            raise
    finally:
        os.close(netns_fd)
    static = tuple(
        PodRoute(
            ipaddress.ip_network(r.dst, strict=False), ipaddress.ip_address(r.gw) if r.gw else None
        )
        for r in ipam.routes
    )
    # As IPAM there is no node bridge: the LAN router is the gateway (reference semantics).
    routes, gateway = plan_routes("dhcp", None, lease.router, lease.routes, static)
    result: dict[str, Any] = {
        "cniVersion": "1.1.0",
        "ips": [{"address": str(lease.address), **({"gateway": str(gateway)} if gateway else {})}],
        "routes": [r.to_result() for r in routes],
    }
    dns = {
        "nameservers": [str(s) for s in lease.dns_servers],
        "domain": lease.domain or "",
        "search": list(lease.search),
    }
    if any(dns.values()):
        result["dns"] = {k: v for k, v in dns.items() if v}
    att.state = "ready"
    att.ips = [str(lease.address)]
    att.result = {"role": "ipam", "cni": result}
    await _thread(agent.store.put, att)
    return result


async def ipam_del(agent: Agent, req: Request) -> dict[str, Any]:
    network = req.raw.get("name")
    if not isinstance(network, str):
        raise CNIError(ErrorCode.INVALID_CONFIG, "name is missing from the network config")
    key = attachment_key(network, req.container_id, req.ifname)
    att = agent.store.get(key)
    if req.netns_fd is not None:
        os.close(req.netns_fd)
        req.netns_fd = None
    if att is not None:
        await teardown(agent, att, None, None)
    elif agent.leases.get(key) is not None:
        await agent.leases.release(key)
    return {}


async def ipam_check(agent: Agent, req: Request) -> dict[str, Any]:
    network, _ = _ipam_conf(req)
    if req.netns_fd is not None:
        os.close(req.netns_fd)
        req.netns_fd = None
    key = attachment_key(network, req.container_id, req.ifname)
    lease = agent.leases.get(key)
    if lease is None or lease.state == "EXPIRED":
        raise CNIError(ErrorCode.CHECK_DRIFT, f"no bound DHCP lease for {key}")
    return {}


async def ipam_status(agent: Agent, req: Request) -> dict[str, Any]:
    return {}


HANDLERS = {"ADD": ipam_add, "DEL": ipam_del, "CHECK": ipam_check, "STATUS": ipam_status}
