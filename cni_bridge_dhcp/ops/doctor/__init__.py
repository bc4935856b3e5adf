"""`cni-bridge-dhcp doctor`: diagnose a node, each problem with its fix.

Runs in the node's network namespace (the one the command runs in) and only reads it,
except for ``--probe-dhcp`` (see ``probe``). The layout:

- ``facts/``: gathering, one module per topic (subprocesses, sockets, files);
- ``probe``: the DHCP probe from a throwaway namespace;
- ``checks/``: the decisions, one module per report section, pure (captured facts in,
  findings out), so each can be tested on captured inputs;
- ``findings``: the Finding type, the report order and the text/JSON rendering;
- ``textconf``: netplan YAML and systemd/NetworkManager INI readers.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ...cni.defaults import DEFAULT_STATE_DIR
from . import checks as dc
from .facts.context import DEFAULT_CONF_DIR, agent_check, build_context, uplink_check
from .facts.firewall import firewall_checks, gather_firewall
from .facts.leases import server_leases_check
from .facts.managers import manager_check
from .facts.nodelease import node_lease_check
from .facts.routes import pod_route_check
from .facts.state import state_check
from .probe import dhcp_check


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
    findings += node_lease_check(ctx)
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
