"""The reliability report: every scenario of issue 8, its result and its figures.

Each test names its scenario with ``@pytest.mark.scenario("<id>")`` and records figures
(cycles run, faults injected, bad inputs tried, leaks found, ...) through the ``figures``
fixture. At the end of the session the report is written to ``results/reliability.md``
and ``results/reliability.json``. Tests never rewrite tracked files: ``make docs-reliability``
copies a complete run's report to ``docs/RELIABILITY.md`` (the committed copy).
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS = REPO_ROOT / "results"


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    promise: str


SCENARIOS = [
    Scenario(
        "restart-100",
        "Agent restart with 100 live pods",
        "SIGKILL + restart: all 100 leases re-adopted with the same addresses and renewed "
        "on time (after T1, before T2), nothing lost at the server",
    ),
    Scenario(
        "dhcp-nak",
        "Server NAKs a renewal (ISC dhcpd restarted with the address given to another client)",
        "the address comes off, a new lease is acquired and put on the pod with its routes; "
        "the pod reaches the LAN and, through the node, beyond it",
    ),
    Scenario(
        "dhcp-no-t1t2",
        "Server sends no T1/T2 (ISC dhcpd) or nonsense T1/T2 (scripted server)",
        "T1/T2 default to 0.5/0.875 of the lease; renewals happen after T1 and before T2",
    ),
    Scenario(
        "dhcp-address-change",
        "Server hands out another address at renewal (scripted server)",
        "the pod moves to the new address keeping its routes and connectivity",
    ),
    Scenario(
        "dhcp-rogue",
        "Two DHCP servers on the LAN, the rogue one answering first",
        "with ipam.serverAllowList naming the real server, the rogue's OFFERs and NAKs are "
        "ignored and the lease comes from the real server",
    ),
    Scenario(
        "uplink-flap",
        "Uplink link flap: the LAN-side peer and the node's eth0 down/up across T1",
        "pods keep their leases and addresses (renewed before T2), connectivity returns",
    ),
    Scenario(
        "state-disk-full",
        "State dir full (a 1 MiB tmpfs in the agent's own mount namespace)",
        "ADD fails with code 105 at each write that can fail; nothing of the pod remains; "
        "ADD works again once there is space",
    ),
    Scenario(
        "state-readonly",
        "State dir read-only (leases/ and attachments/ remounted ro in the agent's mount namespace)",
        "ADD and DEL fail with code 105 naming the file; DEL completes once writable; nothing "
        "half-made remains",
    ),
    Scenario(
        "journal-torn",
        "Torn journal writes (truncated lease and attachment records, stray temporaries)",
        "detected and ignored at start without a crash; the rest keeps working",
    ),
    Scenario(
        "load",
        "200 ADD/DEL cycles with 20 in flight through cnitool",
        "zero failures; no leftover veths, firewall rules, server leases, journal entries or "
        "agent fds; agent RSS growth within the stated bound",
    ),
    Scenario(
        "hostile-cni",
        "Bad and hostile CNI input through the real plugin executable (zipapp)",
        "each answered with the right CNI error code; node links, addresses, routes, "
        "firewall, sysctls, pod namespace, state dir and server leases unchanged",
    ),
    Scenario(
        "dhcp-fuzz",
        "Property-based fuzzing of the DHCP decoder (hypothesis)",
        "at least 10,000 generated packets: the decoder raises only DecodeError, accepted "
        "replies always yield sane lease parameters",
    ),
    Scenario(
        "dhcp-wire",
        "Malformed DHCP replies on the wire ahead of every real reply, while a lease is held",
        "the agent never crashes; the lease (address, server, options, lease time) never "
        "changes because of them",
    ),
    Scenario(
        "root-guard",
        "The machine's own network namespace",
        "nothing any reliability test does changes the root namespace (session guard after "
        "every test: links, addresses, routes, rules, iptables legacy/nft, nft, sysctls)",
    ),
]

# Promises of issue 8 proved by tests in other layers (not duplicated here).
COVERED_ELSEWHERE = [
    (
        "SIGKILL of the agent after every ADD step; restart leaves no half pod",
        "tests/e2e/test_crash_safety.py::test_sigkill_during_add_leaves_nothing_after_restart"
        " (add:pending, add:veth, add:lease, add:routes, add:rules)",
    ),
    (
        "SIGKILL at every uplink takeover step; the node reaches its gateway after recovery",
        "tests/netns/test_uplink.py::test_sigkill_after_each_step_then_recover, "
        "::test_interrupted_takeover_is_rolled_back_by_next_caller",
    ),
    (
        "Agent restart keeps pods and leases (3 pods, dnsmasq)",
        "tests/e2e/test_crash_safety.py::test_agent_restart_keeps_pods_and_leases; "
        "tests/netns/test_dhcp_client.py::test_agent_restart_readopts_and_renews_the_same_address",
    ),
    (
        "DHCP server down past T2 and back; down past expiry and back",
        "tests/netns/test_dhcp_client.py::"
        "test_rebinding_keeps_the_address_and_expiry_removes_then_reacquires",
    ),
    (
        "INIT-REBOOT NAKed after renumbering; DECLINE of an address in use",
        "tests/netns/test_dhcp_client.py::test_init_reboot_nak_falls_back_to_init, "
        "::test_an_address_in_use_is_declined_unless_the_probe_is_off",
    ),
    (
        "DHCPv6: agent SIGKILL and restart (lease re-adopted, renewed past its first valid "
        "lifetime); server gone past expiry and back; hostile DHCPv6 packets",
        "tests/netns/test_dhcpv6.py::test_agent_restart_keeps_and_renews_the_lease, "
        "::test_lease_lost_when_the_server_is_gone_then_regained; "
        "tests/unit/test_dhcpv6.py::test_hostile_input_is_malformed_not_a_crash",
    ),
    (
        "The node's own DHCP lease kept past three lease times (udhcpc + dnsmasq, dhclient + "
        "isc-dhcp-server, an agent restart in between); a forgotten address replaced",
        "tests/netns/test_node_lease.py::test_udhcpc_lease_from_dnsmasq_kept_past_its_end, "
        "::test_dhclient_lease_from_dhcpd_kept_past_three_lease_times, "
        "::test_node_address_the_server_forgot_is_replaced",
    ),
    (
        "Pod netns deleted behind our back: DEL succeeds",
        "tests/e2e/test_datapath.py::test_del_is_idempotent_and_survives_a_vanished_netns; "
        "GC: tests/e2e/test_gc_status.py::test_gc_removes_only_attachments_not_listed",
    ),
    (
        "Agent socket 0600, non-root refused, garbage/oversize rejected, stalled client",
        "tests/unit/test_server.py::test_socket_is_0600, ::test_non_root_users_cannot_connect, "
        "::test_garbage_and_oversize_are_rejected_and_the_agent_survives, "
        "::test_a_stalled_client_does_not_block_others",
    ),
    (
        "Hostile CNI env/stdin at the plugin's protocol layer (in-process table)",
        "tests/unit/test_skel.py::test_bad_input_gets_the_right_code_and_never_reaches_the_agent, "
        "::test_oversized_stdin_is_a_decode_error",
    ),
]


# Product bugs this layer found (fixed: the commit that fixed them; open: reported).
FINDINGS = [
    (
        "fixed",
        "A lease lost and regained (NAK, expiry) or moved to another address at renewal: "
        "removing the pod's last IPv4 address made the kernel drop every route of the pod "
        "(its default route via the node); only the address came back",
        "dhcp/podif.py, dhcp/upkeep.py: routes kept and restored around address changes",
    ),
    (
        "fixed",
        "ipam.serverAllowList was checked only after the lease was acquired: a rogue server "
        "answering first made the ADD fail",
        "dhcp/session.py (replies from other server ids ignored in every state), "
        "dhcp/lease.py (journaled), commands/common.py lease_request passes the list",
    ),
    (
        "fixed",
        "A reply whose server id or lease time did not decode was accepted (lease time "
        "guessed as 3600 s)",
        "dhcp/codec.py accept_reply drops it",
    ),
    (
        "fixed",
        "Full or read-only state dir: ADD answered 999 (internal error) with the raw OSError; "
        "a short write on a nearly full disk could commit a torn attachment record; "
        "temporaries were left behind",
        "state/statefile.py (code 105 naming the file, writes looped, temporaries removed), "
        "dhcp/journal.py",
    ),
    (
        "fixed",
        "DEL on a read-only state dir answered 5 (I/O failure) with the raw OSError of the "
        "lease journal, which wrote its records with its own copy of the durable-write code",
        "dhcp/journal.py writes and removes through state/statefile.py: DEL answers 105 naming the file",
    ),
    (
        "fixed",
        "An address-book write failing after the lease was acquired failed the ADD and "
        "leaked the fresh lease (journaled, renewed, held at the server)",
        "state/addressbook.py: the hint is logged when it cannot be saved",
    ),
    (
        "fixed",
        "Deeply nested JSON (stdin or agent socket) answered 999 with a traceback on stderr",
        "plugin/skel.py, cni/wire.py: decode error 6",
    ),
    (
        "fixed",
        "After a DHCP address change (new address at renewal, or a NAK and a new lease) the "
        "agent kept the pod's per-address FORWARD/ipMasq rules and its attachment record "
        "(status, CHECK, periodic re-assertion) on the OLD address: routed pod traffic was "
        "dropped on FORWARD-DROP nodes",
        "commands/lease_follow.py: a lease-change hook swaps the pod's rules, record and address-book "
        "hint; test_new_address_is_forwarded_on_a_forward_drop_node",
    ),
    (
        "fixed",
        "Agent RSS grew 6-11 KiB per ADD/DEL cycle with no plateau (57 -> 67 MiB over 1,000 "
        "cycles) while the live heap stayed flat (heaptrack, pymalloc): glibc kept freed "
        "memory, its mmap threshold raised to 2 MiB by libnftables' batch buffer, in up to "
        "16 per-thread arenas",
        "agent/runtime/allocator.py (mallopt: fixed 64 KiB mmap / 128 KiB trim thresholds, 2 arenas): "
        "about 2 KiB per cycle over 2,000 cycles; load-test bound lowered to 8 MiB",
    ),
    (
        "open",
        "Agent RSS still grows 1.2-1.6 KiB per ADD/DEL cycle after the first 1,000 cycles, "
        "still rising at 2,000, with no live-heap growth behind it (allocator caches or "
        "holes, not proven)",
        "bounded per run by the load test (8 MiB over 200 cycles); needs a longer soak",
    ),
]


@dataclass
class TestRecord:
    nodeid: str
    scenario: str
    outcome: str = "not run"  # passed | failed | skipped | xfailed | xpassed | error
    duration: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


@dataclass
class Report:
    started: float = field(default_factory=time.time)
    tests: dict[str, TestRecord] = field(default_factory=dict)
    root_guard_checks: int = 0

    def record(self, nodeid: str, scenario: str) -> TestRecord:
        rec = self.tests.get(nodeid)
        if rec is None:
            rec = self.tests[nodeid] = TestRecord(nodeid, scenario)
        return rec

    def scenario_outcome(self, sid: str) -> tuple[str, list[TestRecord]]:
        recs = [r for r in self.tests.values() if r.scenario == sid]
        if sid == "root-guard":
            ran = [r for r in self.tests.values() if r.outcome not in ("not run", "skipped")]
            guard_failed = any("root namespace" in r.reason for r in self.tests.values())
            if not ran:
                return "not run", recs
            return ("FAIL" if guard_failed else "PASS"), recs
        outcomes = {r.outcome for r in recs}
        if not recs or outcomes <= {"not run"}:
            return "not run", recs
        if outcomes & {"failed", "error", "xpassed"}:
            return "FAIL", recs
        if "xfailed" in outcomes:
            return "FAIL (known product bug, xfail)", recs
        if outcomes <= {"skipped"}:
            return "skipped", recs
        if "skipped" in outcomes or "not run" in outcomes:
            return "PASS (partial)", recs
        return "PASS", recs

    def complete(self) -> bool:
        return all(
            not self.scenario_outcome(s.id)[0].startswith(("not run", "skipped", "PASS (partial)"))
            for s in SCENARIOS
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "runtime_seconds": round(time.time() - self.started, 1),
            "host": {"kernel": platform.release(), "python": platform.python_version()},
            "commit": _git_head(),
            "scenarios": [
                {
                    "id": s.id,
                    "title": s.title,
                    "promise": s.promise,
                    "result": self.scenario_outcome(s.id)[0],
                    "tests": [
                        {
                            "test": r.nodeid,
                            "outcome": r.outcome,
                            "seconds": round(r.duration, 1),
                            "figures": r.figures,
                            **({"reason": r.reason} if r.reason else {}),
                        }
                        for r in self.scenario_outcome(s.id)[1]
                    ],
                }
                for s in SCENARIOS
            ],
            "root_guard_checks": self.root_guard_checks,
            "findings": [{"state": a, "what": b, "where": c} for a, b, c in FINDINGS],
            "covered_elsewhere": [{"promise": p, "tests": t} for p, t in COVERED_ELSEWHERE],
        }

    def markdown(self) -> str:
        data = self.as_json()
        lines = [
            "# Reliability report",
            "",
            "Written by the reliability layer (tests/reliability, issue 8; run by `make test`",
            "and alone by `make test-reliability`); docs/RELIABILITY.md is the copy of the",
            "latest complete run. Every scenario is an automated test in its own network",
            "namespaces that fails if its promise breaks.",
            "",
            f"- commit: `{data['commit']}`; kernel {data['host']['kernel']}, "
            f"Python {data['host']['python']}",
            f"- runtime of the layer: {data['runtime_seconds']:.0f} s",
            f"- root-namespace guard checks: {self.root_guard_checks} (one after every test)",
            "",
            "| Scenario | Result | Figures |",
            "|---|---|---|",
        ]
        for s in data["scenarios"]:
            figs: list[str] = []
            if s["id"] == "root-guard":
                figs.append(f"checks: {self.root_guard_checks}")
            for t in s["tests"]:
                figs += [f"{k}: {_fmt(v)}" for k, v in t["figures"].items()]
            lines.append(
                f"| **{s['title']}** ({s['id']}) | {s['result']} | {'; '.join(figs) or '-'} |"
            )
        lines += ["", "## Promises and tests", ""]
        for s in data["scenarios"]:
            lines.append(f"### {s['title']}")
            lines.append("")
            lines.append(f"Promise: {s['promise']}.")
            lines.append("")
            for t in s["tests"]:
                line = f"- `{t['test']}`: {t['outcome']} in {t['seconds']:.0f} s"
                if t.get("reason"):
                    line += f" ({t['reason']})"
                lines.append(line)
            lines.append("")
        lines += ["## Product bugs found by this layer", ""]
        for state, what, where in FINDINGS:
            lines.append(f"- **{state}**: {what}. ({where})")
        lines += ["", "## Covered by other layers (not duplicated here)", ""]
        for item in data["covered_elsewhere"]:
            lines.append(f"- {item['promise']}: `{item['tests']}`")
        lines.append("")
        return "\n".join(lines)

    def write(self) -> Path:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "reliability.json").write_text(json.dumps(self.as_json(), indent=1) + "\n")
        md = RESULTS / "reliability.md"
        md.write_text(self.markdown())
        # `make docs-reliability` publishes only a run in which every scenario ran
        marker = RESULTS / "reliability.complete"
        if self.complete():
            marker.write_text(_git_head() + "\n")
        else:
            marker.unlink(missing_ok=True)
        return md


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)


def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"
