"""`cni-bridge-dhcp doctor`: diagnose a node, each problem with its fix.

Runs in the node's network namespace (the one the command runs in) and only reads it,
except for ``--probe-dhcp``, which plugs a throwaway namespace into the bridge for one
DHCP DISCOVER. That namespace has no name: only an fd of this process pins it, so it
(and the veth into it) vanishes with the process even if it is killed; it is also
removed explicitly. The decisions live in ``checks``; this module gathers facts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...cni.defaults import ATTACHMENTS_DIR, DEFAULT_SOCKET, DEFAULT_STATE_DIR, LEASES_DIR
from ...cni.errors import CNIError
from ...cni.wire import make_request
from ...plugin.agent_client import call
from . import checks as dc

log = logging.getLogger(__name__)

DEFAULT_CONF_DIR = "/etc/cni/net.d"
CLONE_NEWNET = 0x40000000
HELD_STATES = ("bound", "renewing", "rebinding")  # lease states in which a pod uses its address
PROBE_PREFIX = "cbdprobe"  # host end of the probe veth: cbdprobe<6 hex>, 14 characters


@dataclass
class Context:
    args: argparse.Namespace
    root: Path
    socket: str
    state_dir: Path
    bridge: str
    uplink: str
    report: dict[str, Any] | None = None
    report_error: str | None = None
    links: dict[str, dc.LinkFacts] = field(default_factory=dict)
    macs: dict[str, str] = field(default_factory=dict)
    attachments: list[dict[str, Any]] = field(default_factory=list)


# ============================================================================ small readers


def _run(cmd: list[str], *, pass_fds: Sequence[int] = (), timeout: float = 30) -> str | None:
    """stdout of a read-only command, or None if it is missing or fails."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            pass_fds=tuple(pass_fds),
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("%s: %s", " ".join(cmd), exc)
        return None
    if proc.returncode != 0:
        log.debug("%s failed: %s", " ".join(cmd), proc.stderr.strip())
        return None
    return proc.stdout


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _json_list(text: str | None) -> list[dict[str, Any]]:
    if not text:
        return []
    try:
        data = json.loads(text)
    except ValueError:
        return []
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


# ============================================================================ context


def _conf_files(conf_dir: Path) -> list[dc.ConfFile]:
    files: list[dc.ConfFile] = []
    try:
        names = sorted(p.name for p in conf_dir.iterdir() if p.is_file())
    except OSError:
        return files
    for name in names:
        if not name.endswith(dc.CONF_SUFFIXES):
            continue
        text = _read(conf_dir / name)
        try:
            data = json.loads(text) if text is not None else None
        except ValueError as exc:
            files.append(dc.ConfFile(name, None, f"invalid JSON: {exc}"))
            continue
        if not isinstance(data, dict):
            files.append(dc.ConfFile(name, None, "unreadable or not a JSON object"))
            continue
        files.append(dc.ConfFile(name, data))
    return files


def _our_conf(files: Sequence[dc.ConfFile]) -> dict[str, Any]:
    for f in files:
        if f.data is not None:
            plugin = dc.our_plugin(f.data)
            if plugin is not None:
                return plugin
    return {}


def _links() -> tuple[dict[str, dc.LinkFacts], dict[str, str]]:
    facts: dict[str, dc.LinkFacts] = {}
    macs: dict[str, str] = {}
    for link in _json_list(_run(["ip", "-j", "-d", "addr", "show"])):
        name = str(link.get("ifname", ""))
        info = link.get("linkinfo") or {}
        sysfs = Path("/sys/class/net") / name
        facts[name] = dc.LinkFacts(
            name=name,
            kind=str(info.get("info_kind", "")) if isinstance(info, dict) else "",
            master=link.get("master"),
            wireless=(sysfs / "wireless").exists() or (sysfs / "phy80211").exists(),
            global_addrs=dc.global_addresses(link.get("addr_info") or []),
        )
        if link.get("address"):
            macs[name] = str(link["address"])
    return facts, macs


def _read_attachments(state_dir: Path) -> list[dict[str, Any]]:
    from ...agent.state import statefile

    out: list[dict[str, Any]] = []
    folder = state_dir / ATTACHMENTS_DIR
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        data = statefile.read_json(path)
        if data is not None and {"network", "container_id", "ifname", "netns"} <= set(data):
            out.append(data)
    return out


def _label(att: dict[str, Any]) -> str:
    who = (
        f"pod {att['pod_namespace']}/{att['pod_name']}"
        if att.get("pod_name")
        else f"container {str(att['container_id'])[:12]}"
    )
    return f"{who} ({att['network']}, {att['ifname']})"


def _uplink_name(
    given: str | None, journal_uplink: str | None, conf: str | None, links: dict[str, Any]
) -> str:
    if given:
        return given
    if journal_uplink:
        return journal_uplink
    if conf:
        if conf in links:
            return conf
        with contextlib.suppress(re.error):
            matches = sorted(n for n in links if re.fullmatch(conf, n))
            if matches:
                return matches[0]
        return conf
    return "eth0"


def build_context(args: argparse.Namespace) -> tuple[Context, list[dc.ConfFile]]:
    from ...agent.uplink import journal as uj

    root = Path(args.root)
    conf_dir = Path(args.conf_dir)
    files = _conf_files(conf_dir)
    conf = _our_conf(files)
    state_dir = Path(args.state_dir)
    journal = uj.load(state_dir) if uj.journal_path(state_dir).exists() else None
    links, macs = _links()
    ctx = Context(
        args=args,
        root=root,
        socket=args.socket or str(conf.get("agentSocket") or DEFAULT_SOCKET),
        state_dir=state_dir,
        bridge=args.bridge or (journal.bridge if journal else None) or conf.get("bridge", "cni0"),
        uplink=_uplink_name(
            args.uplink,
            journal.uplink if journal else None,
            conf.get("uplinkInterface"),
            links,
        ),
        links=links,
        macs=macs,
    )
    try:
        ctx.report = call(
            ctx.socket, make_request("REPORT", "1.1.0", {}, {}, False), response_timeout=15
        )
    except CNIError as exc:
        ctx.report_error = exc.msg.split(": ", 1)[-1] if ": " in exc.msg else exc.msg
    ctx.attachments = _read_attachments(state_dir)
    return ctx, files


# ============================================================================ checks


def agent_check(ctx: Context) -> list[dc.Finding]:
    pods = len((ctx.report or {}).get("pods", []))
    return [dc.check_agent(ctx.socket, ctx.report_error, os.path.exists(ctx.socket), pods)]


def uplink_check(ctx: Context) -> list[dc.Finding]:
    from ...agent.uplink import journal as uj

    path = uj.journal_path(ctx.state_dir)
    journal = uj.load(ctx.state_dir) if path.exists() else None
    recorded = journal is not None and journal.phase in (uj.DONE, uj.PRECONFIGURED)
    findings = [dc.check_uplink(ctx.uplink, ctx.bridge, ctx.links, recorded)]
    if journal is None and path.exists():
        try:
            uj.load(ctx.state_dir, strict=True)
        except CNIError as exc:
            findings.append(
                dc.bad(
                    "uplink journal",
                    exc.msg,
                    f"It may be the only record of the uplink before the takeover: read it "
                    f"({path}), put the uplink's addresses and routes right by hand if needed, "
                    f"then move it away; until then the agent takes no uplink over.",
                )
            )
    return findings


@dataclass
class FirewallFacts:
    legacy_texts: dict[int, str]
    nft_texts: dict[int, str]
    nft_items: list[dict[str, Any]]
    nft_available: bool
    places: list[dc.FilterPlace]


def _nft_ruleset() -> tuple[list[dict[str, Any]], bool]:
    try:
        from ...agent.firewall.libnft import Nft

        return Nft().list_ruleset(), True
    except Exception as exc:  # no libnftables, or a failing netlink call
        log.debug("libnftables: %s", exc)
    out = _run(["nft", "-j", "list", "ruleset"])
    if out is None:
        return [], False
    try:
        items = json.loads(out).get("nftables", [])
    except (ValueError, AttributeError):
        return [], False
    return [i for i in items if isinstance(i, dict)], True


def gather_firewall() -> FirewallFacts:
    from ...agent.firewall import detect

    legacy_texts: dict[int, str] = {}
    for family, names in detect.legacy_tables().items():
        if not names:
            continue  # reading would create tables: there is nothing to read anyway
        tool = "iptables-legacy-save" if family == 4 else "ip6tables-legacy-save"
        out = _run([tool])
        if out is not None:
            legacy_texts[family] = out
    items, nft_ok = _nft_ruleset()
    nft_texts: dict[int, str] = {}
    skip: list[tuple[str, str]] = []
    for family, fam_name, tool in (
        (4, "ip", "iptables-nft-save"),
        (6, "ip6", "ip6tables-nft-save"),
    ):
        has_filter = any(
            isinstance(i.get("table"), dict)
            and i["table"].get("family") == fam_name
            and i["table"].get("name") == "filter"
            for i in items
        )
        if not has_filter:
            continue
        out = _run([tool, "-t", "filter"])
        if out is not None and "incompatible" not in out:
            nft_texts[family] = out
            skip.append((fam_name, "filter"))
    places: list[dc.FilterPlace] = []
    for family, text in sorted(legacy_texts.items()):
        places += dc.places_from_save(
            text, "iptables-legacy" if family == 4 else "ip6tables-legacy"
        )
    for family, text in sorted(nft_texts.items()):
        places += dc.places_from_save(text, "iptables-nft" if family == 4 else "ip6tables-nft")
    places += dc.places_from_nft(items, skip)
    return FirewallFacts(legacy_texts, nft_texts, items, nft_ok, places)


def _pods_fw(ctx: Context) -> list[dc.PodFw]:
    pods = []
    for att in ctx.attachments:
        result = att.get("result") or {}
        if att.get("state") != "ready" or result.get("role") == "ipam":
            continue
        if (result.get("fw") or {}).get("backend") == "none":
            continue
        families = dc.families_of(att.get("ips") or [])
        if families:
            pods.append(
                dc.PodFw(
                    _label(att),
                    str(att["network"]),
                    str(att["container_id"]),
                    str(att["ifname"]),
                    families,
                )
            )
    return pods


def firewall_checks(ctx: Context, fw: FirewallFacts) -> list[dc.Finding]:
    from ...agent.firewall import detect

    bridge_exists = ctx.bridge in ctx.links
    findings = dc.check_forward(fw.places, ctx.bridge, bridge_exists, _pods_fw(ctx))

    def sysctl(name: str) -> str | None:
        text = _read(Path("/proc/sys/net/bridge") / name)
        return text.strip() if text is not None else None

    def bridge_opt(name: str) -> str | None:
        text = _read(Path("/sys/class/net") / ctx.bridge / "bridge" / name)
        return text.strip() if text is not None else None

    nf = dc.BrNetfilter(
        sysctl("bridge-nf-call-iptables"),
        sysctl("bridge-nf-call-ip6tables"),
        bridge_opt("nf_call_iptables"),
        bridge_opt("nf_call_ip6tables"),
    )
    kube = dc.kube_proxy_present([*fw.legacy_texts.values(), *fw.nft_texts.values()], fw.nft_items)
    findings += dc.check_br_netfilter(nf, fw.places, ctx.bridge, bridge_exists, kube)
    legacy = detect.legacy_usage_from_save(fw.legacy_texts)
    nft = detect.nft_usage_from_ruleset(fw.nft_items) if fw.nft_available else None
    ours = {
        "iptables": dc.ours_in_save(fw.legacy_texts.values()),
        "nftables": dc.ours_in_nft(fw.nft_items),
    }
    version = _run(["iptables", "-V"])
    findings += dc.check_backend(
        legacy, nft, ours, dc.iptables_command_backend(version) if version else None
    )
    return findings


def _expected_gateway(att: dict[str, Any]) -> str | None:
    cni = (att.get("result") or {}).get("cni") or {}
    for route in cni.get("routes") or []:
        if isinstance(route, dict) and route.get("dst") == "0.0.0.0/0" and route.get("gw"):
            return str(route["gw"])
    return None


def _pod_routes(att: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, str]:
    path = str(att["netns"])
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return None, f"{path}: {exc.strerror}"
    try:
        if os.fstat(fd).st_ino != int(att.get("netns_inode", 0)):
            return None, f"{path} is another namespace now"
        out = _run(
            [
                "nsenter",
                f"--net=/proc/self/fd/{fd}",
                "ip",
                "-j",
                "-4",
                "route",
                "show",
                "table",
                "main",
            ],
            pass_fds=[fd],
        )
    finally:
        os.close(fd)
    if out is None:
        return None, "nsenter/ip failed"
    return _json_list(out), ""


def pod_route_check(ctx: Context) -> list[dc.Finding]:
    known: set[str] | None = None
    if ctx.report is not None:
        known = {str(p.get("key")) for p in ctx.report.get("pods", [])}
    facts: list[dc.PodRouteFacts] = []
    for att in ctx.attachments:
        key = f"{att['network']}/{att['container_id']}/{att['ifname']}"
        if known is not None and key not in known:
            continue
        if att.get("state") != "ready" or (att.get("result") or {}).get("role") == "ipam":
            continue
        gw = _expected_gateway(att)
        if gw is None:
            continue
        routes, error = _pod_routes(att)
        facts.append(
            dc.PodRouteFacts(_label(att), str(att["netns"]), str(att["ifname"]), gw, routes, error)
        )
    return dc.check_pod_routes(facts)


MANAGER_SOURCES = (
    ("netplan", "etc/netplan", ("*.yaml", "*.yml")),
    ("netplan", "run/netplan", ("*.yaml", "*.yml")),
    ("networkd", "etc/systemd/network", ("*.network",)),
    ("networkd", "run/systemd/network", ("*.network",)),
    ("nm", "etc/NetworkManager/system-connections", ("*.nmconnection",)),
    ("nm", "run/NetworkManager/system-connections", ("*.nmconnection",)),
    ("ifupdown", "etc/network", ("interfaces",)),
    ("ifupdown", "etc/network/interfaces.d", ("*",)),
)


def gather_manager_configs(root: Path) -> list[dc.ConfigText]:
    configs: list[dc.ConfigText] = []
    for kind, rel, patterns in MANAGER_SOURCES:
        folder = root / rel
        if not folder.is_dir():
            continue
        paths = sorted({p for pat in patterns for p in folder.glob(pat) if p.is_file()})
        for path in paths:
            # netplan's generated networkd files are reported through their netplan source
            if kind == "networkd" and path.name.startswith("10-netplan-"):
                continue
            text = _read(path)
            if text is not None:
                shown = "/" + str(path.relative_to(root))
                configs.append(dc.ConfigText(shown, kind, text))
    return configs


def manager_check(ctx: Context) -> list[dc.Finding]:
    configs = gather_manager_configs(ctx.root)
    return dc.check_network_managers(configs, ctx.uplink, ctx.bridge, ctx.macs.get(ctx.uplink))


def state_check(ctx: Context) -> list[dc.Finding]:
    from ...agent.uplink import journal as uj

    atts = []
    for att in ctx.attachments:
        try:
            current: int | None = os.stat(str(att["netns"])).st_ino
        except OSError:
            current = None
        atts.append(
            dc.AttachmentFacts(
                key=f"{att['network']}/{att['container_id']}/{att['ifname']}",
                label=_label(att),
                state=str(att.get("state", "")),
                netns=str(att["netns"]),
                netns_inode=int(att.get("netns_inode", 0)),
                current_inode=current,
                created=float(att.get("created", 0.0)),
            )
        )
    journal_facts = None
    journal = uj.load(ctx.state_dir) if uj.journal_path(ctx.state_dir).exists() else None
    if journal is not None:
        journal_facts = dc.JournalFacts(
            phase=journal.phase,
            uplink=journal.uplink,
            bridge=journal.bridge,
            last_step=journal.steps[-1] if journal.steps else "none",
            belongs_here=journal.belongs_here(),
            lock_held=_lock_held(ctx.state_dir / uj.LOCK_NAME),
            updated_at=journal.updated_at,
        )
    records = []
    for path in sorted((ctx.state_dir / LEASES_DIR).glob("*.json")):
        text = _read(path)
        try:
            data = json.loads(text) if text else None
        except ValueError:
            continue
        if isinstance(data, dict) and "key" in data:
            records.append(dc.LeaseRecordFacts(str(data["key"]), str(data.get("address", "?"))))
    return dc.check_state(str(ctx.state_dir), atts, journal_facts, records, time.time())


def _lock_held(path: Path) -> bool:
    """Whether another process holds the takeover lock now (never creates the file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)  # also drops the lock if we got it
    return False


def read_server_leases(path: str) -> dict[str, dc.ServerLease]:
    from dhcp_leases import DhcpLeases

    leases = []
    # include_backups: entries without a hardware address (abandoned, some frees) supersede
    # earlier ones for the same address too
    for lease in DhcpLeases(path).get(include_backups=True):
        uid = lease.data.get("uid")
        leases.append(
            dc.ServerLease(
                ip=str(lease.ip),
                mac=str(lease.ethernet or ""),
                state=str(lease.binding_state),
                ends=lease.end.timestamp() if lease.end is not None else None,
                uid=dc.decode_dhcpd_uid(uid) if isinstance(uid, str) else None,
                hostname=str(lease.hostname or ""),
            )
        )
    return dc.last_per_address(leases)


def server_leases_check(ctx: Context) -> list[dc.Finding]:
    path = ctx.args.server_leases
    if path is None:
        return dc.check_server_leases(None, None, [], time.time(), ctx.args.shared_lan)
    try:
        server: dict[str, dc.ServerLease] | None = read_server_leases(path)
        error = ""
    except (OSError, ValueError, KeyError) as exc:
        server, error = None, str(exc)
    client_ids: dict[str, bytes] = {}
    for rec_path in (ctx.state_dir / LEASES_DIR).glob("*.json"):
        text = _read(rec_path)
        with contextlib.suppress(ValueError, TypeError):
            data = json.loads(text or "")
            client_ids[str(data["key"])] = bytes.fromhex(str(data.get("client_id", "")))
    pods = []
    for pod in (ctx.report or {}).get("pods", []):
        lease = pod.get("lease")
        if not lease or str(lease.get("state", "")).lower() not in HELD_STATES:
            continue
        label = (
            f"pod {pod['podNamespace']}/{pod['podName']}"
            if pod.get("podName")
            else f"container {str(pod.get('containerId'))[:12]}"
        )
        pods.append(
            dc.PodLease(
                label,
                str(lease["address"]).split("/")[0],
                str(pod.get("mac", "")),
                client_ids.get(str(pod.get("key"))),
            )
        )
    return dc.check_server_leases(path, server, pods, time.time(), ctx.args.shared_lan, error)


# ============================================================================ DHCP probe


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def new_anonymous_netns() -> int:
    """An fd of a brand-new, nameless network namespace (the fd is its only reference)."""
    box: dict[str, Any] = {}

    def target() -> None:
        # unshare() moves only this short-lived thread; the fd outlives it
        if _libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            box["error"] = OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
            return
        box["fd"] = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    thread = threading.Thread(target=target, name="doctor-probe-netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return int(box["fd"])


def _random_mac() -> str:
    raw = bytearray(secrets.token_bytes(6))
    raw[0] = (raw[0] | 0x02) & 0xFE  # locally administered unicast
    return ":".join(f"{b:02x}" for b in raw)


async def _discover(netns_fd: int, ifname: str, mac: str, timeout: float) -> list[dc.Offer]:
    from ...agent.dhcp import codec, options
    from ...agent.dhcp.codec import BOOTREQUEST, Message, MessageType, Opt
    from ...agent.dhcp.lease import request_list
    from ...agent.dhcp.transport import PodTransportFactory, Target

    tr = await PodTransportFactory().open(
        Target(netns_path="doctor-probe", ifname=ifname, mac=mac, netns_fd=netns_fd),
        bring_up=True,
    )
    offers: list[dc.Offer] = []
    try:
        xid = secrets.randbits(32)
        chaddr = codec.mac_bytes(mac)
        packet = codec.encode(
            Message(
                op=BOOTREQUEST,
                xid=xid,
                chaddr=chaddr,
                flags=codec.FLAG_BROADCAST,
                options={
                    Opt.MESSAGE_TYPE: bytes((MessageType.DISCOVER,)),
                    Opt.PARAM_REQUEST: request_list(()),
                    Opt.HOSTNAME: b"cni-bridge-dhcp-doctor",
                },
            )
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_send = loop.time()
        settle: float | None = None  # after the first offer, listen briefly for others
        interval = 1.0
        while True:
            now = loop.time()
            end = min(deadline, settle) if settle is not None else deadline
            if now >= end:
                break
            if settle is None and now >= next_send:
                await tr.send_broadcast(packet)
                next_send = now + interval
                interval = min(interval * 2, 4.0)
            wait = min(end, next_send if settle is None else end) - now
            rx = await tr.recv(max(wait, 0.01))
            if rx is None:
                continue
            msg = codec.accept_reply(rx.payload, xid=xid, chaddr=chaddr, types=(MessageType.OFFER,))
            if msg is None:
                continue
            raw_server = msg.options.get(Opt.SERVER_ID)
            server = (
                str(options.ipv4(raw_server))
                if raw_server and len(raw_server) == 4
                else str(rx.src_ip)
            )
            raw_router = msg.options.get(Opt.ROUTER)
            router = (
                str(options.ipv4(raw_router[:4])) if raw_router and len(raw_router) >= 4 else None
            )
            offer = dc.Offer(server=server, address=str(msg.yiaddr), router=router)
            if offer not in offers:
                offers.append(offer)
            if settle is None:
                settle = loop.time() + 0.5
    finally:
        tr.close()
    return offers


def probe_dhcp(
    bridge: str, uplink: str, links: dict[str, dc.LinkFacts], timeout: float
) -> dc.ProbeResult:
    """One DISCOVER from a throwaway namespace plugged into the bridge (or, before the
    takeover, a macvlan on the uplink); every OFFER heard within ``timeout``."""
    from ...agent.datapath.netlink import node_ipr

    if bridge in links and links[bridge].kind == "bridge":
        via = f"through a veth on {bridge}"
    elif uplink in links and links[uplink].master is None:
        via = f"through a macvlan on {uplink}"
    else:
        return dc.ProbeResult(
            via="", timeout=timeout, error=f"neither {bridge} nor {uplink} exists"
        )
    result = dc.ProbeResult(via=via, timeout=timeout)
    host = f"{PROBE_PREFIX}{secrets.token_hex(3)}"
    probe_if = "probe0"
    mac = _random_mac()
    netns_fd = new_anonymous_netns()
    ipr = node_ipr()
    host_index: int | None = None
    try:
        if via.startswith("through a veth"):
            ipr.link(
                "add",
                ifname=host,
                kind="veth",
                peer={"ifname": probe_if, "net_ns_fd": netns_fd, "address": mac},
            )
            host_index = int(ipr.link_lookup(ifname=host)[0])
            ipr.link("set", index=host_index, master=int(ipr.link_lookup(ifname=bridge)[0]))
            ipr.link("set", index=host_index, state="up")
        else:
            ipr.link(
                "add",
                ifname=host,
                kind="macvlan",
                link=int(ipr.link_lookup(ifname=uplink)[0]),
                macvlan_mode="bridge",
                address=mac,
            )
            host_index = int(ipr.link_lookup(ifname=host)[0])
            ipr.link("set", index=host_index, net_ns_fd=netns_fd, ifname=probe_if)
            host_index = None  # it lives (and dies) in the probe namespace now
        result.offers = asyncio.run(_discover(netns_fd, probe_if, mac, timeout))
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if host_index is not None:
            with contextlib.suppress(Exception):
                ipr.link("del", index=host_index)
        ipr.close()
        os.close(netns_fd)  # the last reference: the namespace and its links go away
    return result


def dhcp_check(ctx: Context) -> list[dc.Finding]:
    if not ctx.args.probe_dhcp:
        return dc.check_dhcp_probe(None)
    return dc.check_dhcp_probe(
        probe_dhcp(ctx.bridge, ctx.uplink, ctx.links, ctx.args.probe_timeout)
    )


# ============================================================================ CLI


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cni-bridge-dhcp doctor",
        description="Diagnose this node's cni-bridge-dhcp setup; every problem comes with its "
        "fix. Exit status 1 when something is wrong.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--socket", default=None, help="agent socket (default: from the conflist)")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    p.add_argument(
        "--conf-dir", default=None, help=f"CNI network configs (default: <root>{DEFAULT_CONF_DIR})"
    )
    p.add_argument("--bridge", default=None, help="default: the agent's journal or the conflist")
    p.add_argument("--uplink", default=None, help="default: the agent's journal or the conflist")
    p.add_argument(
        "--root",
        default="/",
        help="the host's root directory: netplan/networkd/NetworkManager/ifupdown files and "
        "the CNI configs are read below it (/host inside the DaemonSet's container)",
    )
    p.add_argument("--server-leases", default=None, metavar="FILE", help="ISC dhcpd lease file")
    p.add_argument(
        "--shared-lan",
        action="store_true",
        help="other nodes' pods lease from the same server: do not report server leases "
        "that no pod on this node holds",
    )
    p.add_argument(
        "--probe-dhcp",
        action="store_true",
        help="send a DHCP DISCOVER from a throwaway namespace plugged into the bridge",
    )
    p.add_argument("--probe-timeout", type=float, default=8.0, help="seconds (default 8)")
    return p


def run_checks(args: argparse.Namespace) -> list[dc.Finding]:
    ctx, files = build_context(args)
    findings = agent_check(ctx)
    findings.append(dc.check_cni_config(args.conf_dir, files))
    findings += uplink_check(ctx)
    findings += firewall_checks(ctx, gather_firewall())
    findings += pod_route_check(ctx)
    findings += manager_check(ctx)
    findings += dhcp_check(ctx)
    findings += state_check(ctx)
    findings += server_leases_check(ctx)
    return findings


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    args = parser().parse_args(list(argv))
    if args.conf_dir is None:
        args.conf_dir = str(Path(args.root) / DEFAULT_CONF_DIR.lstrip("/"))
    return args


def doctor_main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="doctor: %(message)s")
    findings = run_checks(args)
    out = dc.render_json(findings) if args.json else dc.render_text(findings)
    sys.stdout.write(out + "\n")
    return dc.exit_code(findings)
