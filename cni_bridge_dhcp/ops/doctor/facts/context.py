"""What every check needs: the conflist, links, the agent's REPORT, the attachment records."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ....agent.state.attachments import load_records
from ....agent.uplink import journal as uj
from ....cni.agent_client import call
from ....cni.defaults import DEFAULT_SOCKET
from ....cni.errors import CNIError
from ....cni.wire import make_request
from .. import checks as dc
from .common import json_list, read_text, run

DEFAULT_CONF_DIR = "/etc/cni/net.d"


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


def _conf_files(conf_dir: Path) -> list[dc.ConfFile]:
    files: list[dc.ConfFile] = []
    try:
        names = sorted(p.name for p in conf_dir.iterdir() if p.is_file())
    except OSError:
        return files
    for name in names:
        if not name.endswith(dc.CONF_SUFFIXES):
            continue
        text = read_text(conf_dir / name)
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
    for link in json_list(run(["ip", "-j", "-d", "addr", "show"])):
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
    # read-only: the agent's own loader, minus its set-aside of bad records (doctor never writes)
    return [att.to_json() for att in load_records(state_dir)]


def label(att: dict[str, Any]) -> str:
    who = (
        f"pod {att['pod_namespace']}/{att['pod_name']}"
        if att.get("pod_name")
        else f"container {str(att['container_id'])[:12]}"
    )
    return f"{who} ({att['network']}, {att['ifname']})"


def _uplink_name(
    given: str | None, journal_uplink: str | None, conf: str | None, links: dict[str, dc.LinkFacts]
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
