"""The benchmark's statistics, log parsing and report (no root, no timing)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_stats as bs


def test_percentile_interpolates_between_ranks() -> None:
    assert bs.percentile([4, 1, 3, 2], 50) == 2.5
    assert bs.percentile([1, 2, 3, 4], 90) == pytest.approx(3.7)
    assert bs.percentile([1, 2, 3, 4], 0) == 1
    assert bs.percentile([1, 2, 3, 4], 100) == 4
    assert bs.percentile([7.0], 99) == 7.0
    # p99 of 10 samples sits between the 9th and 10th value
    assert bs.percentile(list(range(1, 11)), 99) == pytest.approx(9.91)


@pytest.mark.parametrize("values,q", [([], 50), ([1.0], -1), ([1.0], 101)])
def test_percentile_refuses_nonsense(values: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        bs.percentile(values, q)


def test_summary() -> None:
    assert bs.Summary.of([]) is None
    s = bs.Summary.of([10.0, 30.0, 20.0])
    assert s is not None
    assert (s.n, s.min, s.median, s.max, s.mean) == (3, 10.0, 20.0, 30.0, 20.0)


def test_pair_ratios_and_op_records() -> None:
    assert bs.pair_ratios([10, 20, 5], [100, 0, 50]) == [0.1, 0.1]
    records: list[dict[str, Any]] = [
        {"ms": 5, "ok": True},
        {"ms": 9, "ok": False, "error": "x"},
        {"ms": 7, "ok": True},
    ]
    assert bs.ok_times(records) == [5.0, 7.0]
    assert bs.failures(records) == 1


@pytest.mark.parametrize(
    "ms,text",
    [
        (None, "n/a"),
        (float("nan"), "n/a"),
        (1.234, "1.23 ms"),
        (12.34, "12.3 ms"),
        (123.4, "123 ms"),
        (999.4, "999 ms"),
        (2345.0, "2.35 s"),
    ],
)
def test_fmt_ms(ms: float | None, text: str) -> None:
    assert bs.fmt_ms(ms) == text


def test_md_table_escapes_pipes() -> None:
    table = bs.md_table(("a", "b"), [["x|y", "z"]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | z |"]


AGENT_LOG = """\
2026-11-28 05:58:22,000 INFO cni_bridge_dhcp.agent: agent ready on /x.sock
2026-11-28 05:58:22,667 DEBUG cni_bridge_dhcp.agent.dhcp.client: net/c1/eth0: OFFER 192.168.77.148 from 192.168.77.1
2026-11-28 05:58:22,669 DEBUG cni_bridge_dhcp.agent.dhcp.client: net/c1/eth0: ACK 192.168.77.148/24 from 192.168.77.1
2026-11-28 05:58:22,769 DEBUG cni_bridge_dhcp.agent.dhcp.client: net/c1/eth0: ARP probe of 192.168.77.148: free
2026-11-28 05:58:22,777 INFO cni_bridge_dhcp.agent.service: ADD c1 pod=b/p0 if=eth0 ok: 192.168.77.148/24 in 0.137 s
2026-11-28 05:58:22,800 DEBUG cni_bridge_dhcp.agent.dhcp.client: net/c2/eth0: OFFER 192.168.77.149 from 192.168.77.1
2026-11-28 05:58:22,900 DEBUG cni_bridge_dhcp.agent.dhcp.client: net/other/eth0: OFFER 192.168.77.150 from 192.168.77.1
2026-11-28 05:58:23,707 INFO cni_bridge_dhcp.agent.dhcp.manager: net/c1/eth0: state=RELEASED address=192.168.77.148 server=192.168.77.1
2026-11-28 05:58:23,728 INFO cni_bridge_dhcp.agent.service: DEL c1 pod=-/- if=eth0 ok in 0.025 s
"""


def test_agent_add_steps_from_the_log() -> None:
    steps = bs.parse_agent_add_steps(AGENT_LOG, ["c1", "c2"])
    assert list(steps) == ["c1"]  # c2 never finished: left out
    c1 = steps["c1"]
    assert c1["total"] == pytest.approx(137)
    assert c1["to_offer"] == pytest.approx(27)  # done 22.777 - 0.137 = 22.640 -> 22.667
    assert c1["offer_to_ack"] == pytest.approx(2)
    assert c1["arp_probe"] == pytest.approx(100)
    assert c1["after_arp"] == pytest.approx(8)
    parts = ("to_offer", "offer_to_ack", "arp_probe", "after_arp")
    assert sum(c1[k] for k in parts) == pytest.approx(c1["total"])


def test_agent_add_line_of_older_agents_and_failures() -> None:
    old = AGENT_LOG.replace("ok: 192.168.77.148/24 in 0.137 s", "ok in 0.137 s: 192.168.77.148/24")
    assert bs.parse_agent_add_steps(old, ["c1"])["c1"]["total"] == pytest.approx(137)
    failed = AGENT_LOG.replace(
        "ok: 192.168.77.148/24 in 0.137 s", "failed: code 100: no lease in 0.137 s"
    )
    assert bs.parse_agent_add_steps(failed, ["c1"]) == {}


def test_agent_add_line_of_a_dual_stack_pod() -> None:
    """A pod with an IPv6 address too: the bench's breakdown must still find its ADD."""
    dual = AGENT_LOG.replace(
        "ok: 192.168.77.148/24 in 0.137 s", "ok: 192.168.77.148/24, fd00:77::5:1/64 in 0.137 s"
    )
    steps = bs.parse_agent_add_steps(dual, ["c1"])
    assert steps["c1"]["total"] == pytest.approx(137)
    assert steps["c1"]["arp_probe"] == pytest.approx(100)


def test_agent_totals_per_op() -> None:
    assert bs.parse_agent_totals(AGENT_LOG, "ADD", ["c1", "c2"]) == {"c1": pytest.approx(137)}
    assert bs.parse_agent_totals(AGENT_LOG, "DEL", ["c1"]) == {"c1": pytest.approx(25)}


def test_agent_del_steps_from_the_log() -> None:
    steps = bs.parse_agent_del_steps(AGENT_LOG, ["c1"])
    assert steps["c1"]["total"] == pytest.approx(25)
    assert steps["c1"]["to_released"] == pytest.approx(4)
    assert steps["c1"]["after_release"] == pytest.approx(21)


def test_reference_retries() -> None:
    log = (
        '2026/11/28 05:59:04 Link "eth0" down. Attempting to set up\n'
        "2026/11/28 05:59:04 network is down\n"
        "2026/11/28 05:59:04 retrying in 2.881018 seconds\n"
        "2026/11/28 05:59:07 retrying in 1.5 seconds\n"
    )
    assert bs.parse_reference_retries(log) == pytest.approx([2881.018, 1500.0])


def test_server_events() -> None:
    log = (
        "Nov 28 06:23:43 dnsmasq-dhcp[1]: 1 DHCPNAK(lan0) 192.168.77.166 0a:97 address in use\n"
        "Nov 28 06:23:43 dnsmasq-dhcp[1]: 2 DHCPDECLINE(lan0) 192.168.77.166 de:6b\n"
        "Nov 28 06:23:43 dnsmasq-dhcp[1]: 3 DHCPACK(lan0) 192.168.77.167 de:6c\n"
    )
    assert bs.count_server_events(log) == {"naks": 1, "declines": 1}


TCPDUMP = """\
1795845700.429497 IP 0.0.0.0.68 > 255.255.255.255.67: BOOTP/DHCP, Request from 02:be:00:00:02:00, length 300
1795845700.429968 IP 192.168.77.1.67 > 192.168.77.170.68: BOOTP/DHCP, Reply, length 302
1795845700.461490 IP 0.0.0.0.68 > 255.255.255.255.67: BOOTP/DHCP, Request from 02:be:00:00:02:00, length 300
1795845700.462417 IP 192.168.77.1.67 > 192.168.77.170.68: BOOTP/DHCP, Reply, length 302
1795845700.533446 IP 0.0.0.0.68 > 255.255.255.255.67: BOOTP/DHCP, Request from 02:be:00:00:02:01, length 300
1795845700.600000 IP 0.0.0.0.68 > 255.255.255.255.67: BOOTP/DHCP, Request from 02:be:00:00:02:02, length 300
1795845700.600500 IP 192.168.77.1.67 > 192.168.77.172.68: BOOTP/DHCP, Reply, length 302
1795845700.620000 IP 0.0.0.0.68 > 255.255.255.255.67: BOOTP/DHCP, Request from 02:be:00:00:02:02, length 300
1795845700.621000 IP 192.168.77.1.67 > 192.168.77.172.68: BOOTP/DHCP, Reply, length 302
"""


def test_dhcp_wire_times_per_client_exchange() -> None:
    wire = bs.parse_dhcp_wire(TCPDUMP)
    # the client ...:01 got no answer: its exchange is incomplete and skipped
    assert wire["discover_to_offer"] == pytest.approx([0.471, 0.5], abs=1e-3)
    assert wire["offer_to_request"] == pytest.approx([31.522, 19.5], abs=1e-3)
    assert wire["request_to_ack"] == pytest.approx([0.927, 1.0], abs=1e-3)


def ops(*ms: float, fail: int = 0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"ms": m, "ok": True} for m in ms]
    out += [{"ms": 1.0, "ok": False, "error": "boom"} for _ in range(fail)]
    return out


def sample_data(*, ours_add: float = 150.0, conc_fail: int = 0) -> dict[str, Any]:
    return {
        "meta": {"started": "2026-11-28T06:00:00Z", "quick": False, "duration_s": 600},
        "sequential": {
            "iterations": 3,
            "add": {"reference": ops(2000, 2100, 1900), "ours": ops(ours_add, ours_add, 160)},
            "del": {"reference": ops(40, 38, 39), "ours": ops(30, 31, 29)},
            "leases_left": {
                "reference": {"added": 3, "left": 3},
                "ours": {"added": 3, "left": 0},
            },
        },
        "bare_dhcp": {"udhcpc": [110.0, 120.0], "udhcpc_arp100": [210.0]},
        "concurrent": [
            {
                "n": 50,
                "side": "ours",
                "add": {"ops": ops(*[200.0] * 49, 300.0, fail=conc_fail), "wall_ms": 900.0},
                "del": {"ops": ops(50.0), "wall_ms": 60.0},
            }
        ],
        "exec": {"ours VERSION": [30.0, 35.0, 40.0]},
        "resources": {
            "lease_seconds": 120,
            "levels": [
                {"leases": 250, "target_leases": 250, "rss_kb": 55 * 1024, "cpu_pct": 1.5},
            ],
        },
    }


def test_report_has_every_table_and_survives_json() -> None:
    data = json.loads(json.dumps(sample_data()))
    report = bs.render_report(data)
    for heading in (
        "## Sequential ADD and DEL",
        "## Concurrent ADDs",
        "## Plugin exec cost",
        "## Agent resources",
        "## Machine, versions, load",
    ):
        assert heading in report
    assert "| ours ADD | 3 |" in report


def test_daemon_cpu_rows() -> None:
    data = sample_data()
    data["sequential"]["add"]["ours"] = [
        {"ms": 1, "ok": True, "daemon_cpu_ms": 10.0},
        {"ms": 1, "ok": True, "daemon_cpu_ms": 20.0},
    ]
    data["concurrent"][0]["add"]["daemon_cpu_ms"] = 1000.0  # over 50 ops
    rows = bs.daemon_cpu_rows(data)
    assert ["sequential ADD", "n/a", "15.0 ms"] in rows
    assert ["50 concurrent ADD", "n/a", "20.0 ms"] in rows


def test_busy_warning() -> None:
    quiet = {"machine": {"CPUs (nproc)": "2"}, "load": {"start": "0.3 0.2 0.1", "end": "0.9 1 1"}}
    assert bs.busy_warning(quiet) is None
    busy = {**quiet, "load": {"start": "3.5 1 1", "end": "0.5 1 1"}}
    warning = bs.busy_warning(busy)
    assert warning is not None and "load 3.5 at start" in warning
    others = {**quiet, "other_sandboxes": {"start": 0, "end": 4}}
    assert "4 other" in str(bs.busy_warning(others))
    assert "busy" in bs.render_report({"meta": busy})


def test_only_other_runs_namespaces_make_a_run_busy() -> None:
    """The run's own sandboxes (lan, node, and the pods and bare clients made during the run)
    are not "other test runs"; another run's, and a test's, are."""
    mine = {"cbd-1a2b3c", "cbd-4d5e6f"}
    own = ["cbd-1a2b3c-lan", "cbd-1a2b3c-node", "cbd-1a2b3c-pod-bare", "cbd-4d5e6f-pod-s3"]
    others = ["cbd-777777-node", "cbd-ll-0f0f0f0f", "cbd-1a2b3cd-lan"]
    assert bs.other_runs(own, mine) == 0
    assert bs.other_runs(own + others + ["netns-of-someone-else"], mine) == 3


def test_report_of_an_empty_run_renders() -> None:
    report = bs.render_report({}, targets="## Targets\n\nnone", extra=["## Extra\n\nx"])
    assert report.startswith("# Benchmark")
    assert report.index("## Targets") < report.index("## Extra") < report.index("## Reproduce")
