"""Issue 16's targets and the report sections of `make bench` (scripts/bench_targets.py):
pure functions of one run's JSON, so no root and no timing here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_targets as bt


def ops(*ms: float, fail: int = 0, cpu: float | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"ms": m, "ok": True} for m in ms]
    if cpu is not None:
        for rec in out:
            rec["daemon_cpu_ms"] = cpu
    return out + [{"ms": 1.0, "ok": False, "error": "boom"} for _ in range(fail)]


def run(data: dict[str, Any]) -> dict[str, bt.Target]:
    return {t.name: t for t in bt.evaluate(json.loads(json.dumps(data)))}


def good() -> dict[str, Any]:
    steps = {
        f"c{i}": {
            "total": 40.0,
            "to_offer": 10.0,
            "offer_to_ack": 1.0,
            "arp_probe": 0.0,
            "after_arp": 29.0,
            "wall": 55.0,
            "outside_agent": 15.0,
        }
        for i in range(3)
    }
    return {
        "exec_floor": {
            "ms": {
                "python3 -I -S -c pass": [10.0, 10.0, 10.0],
                "zipapp VERSION": [15.0, 16.0, 17.0],
                "zipapp STATUS (agent)": [18.0, 19.0, 20.0],
                "zipapp DEL unknown (agent)": [19.0, 20.0, 21.0],
            }
        },
        "veth_floor": {"ip link del (veth pair)": [14.0, 15.0]},
        "exec": {"ours VERSION": [12.0]},
        "sequential": {
            "add": {"reference": ops(2000, 2000, cpu=4.0), "ours": ops(150, 150, cpu=10.0)},
            "del": {"reference": ops(40, 40, cpu=1.0), "ours": ops(35, 35, cpu=4.0)},
            "leases_left": {"ours": {"added": 2, "left": 0}},
        },
        "bare_dhcp": {"udhcpc_arp100": [200.0, 210.0]},
        "concurrent": [
            {"n": 50, "side": "ours", "add": {"ops": ops(300, 400)}, "del": {"ops": ops(90)}},
            {"n": 50, "side": "reference", "add": {"ops": ops(3000)}, "del": {"ops": ops(100)}},
            {"n": 1, "side": "ours", "add": {"ops": ops(150)}, "del": {"ops": ops(30)}},
        ],
        "resources": {
            "batch": 20,
            "batches": [{"op": "ADD to 250", "count": 200, "failures": 0, "wall_ms": 9000.0}],
            "levels": [{"leases": 250, "target_leases": 250, "rss_kb": 55 * 1024, "cpu_pct": 1.5}],
        },
        "cri": {
            "ms": {
                "ours": {"run": [400.0], "stop": [100.0]},
                "reference": {"run": [2000.0], "stop": [120.0]},
            }
        },
        "fast_add": {"arpProbeWait 0": {"add": ops(55, 58), "del": ops(30), "steps": steps}},
        "soak": {"measured_cycles": 20000, "rss_growth_kib": 1024, "growth_bytes_per_cycle": 52.4},
        "pictures": ["bench-concurrency.png", "bench-add-breakdown.png"],
        "agent_steps": {"add": steps},
    }


def test_every_target_met() -> None:
    targets = run(good())
    assert len(targets) == 15
    assert all(t.met for t in targets.values()), {n: t for n, t in targets.items() if not t.met}
    assert "VERSION 1.60x" in targets["exec: VERSION, STATUS, DEL unknown"].measured
    assert "kernel floor (veth delete) 14.5 ms" in targets["DEL median vs reference"].measured


def test_targets_not_met() -> None:
    data = good()
    data["exec_floor"]["ms"]["zipapp STATUS (agent)"] = [25.0]  # 2.5x the floor
    data["sequential"]["del"]["ours"] = ops(50, 50, cpu=6.0)  # slower than 40, 6 ms CPU
    data["concurrent"][0]["add"]["ops"] = ops(300, 1200, fail=1)
    data["resources"]["batches"][0]["failures"] = 2
    data["fast_add"]["arpProbeWait 0"]["add"] = ops(80)
    data["soak"]["rss_growth_kib"] = 6000
    t = run(data)
    assert t["exec: VERSION, STATUS, DEL unknown"].met is False
    assert t["DEL median vs reference"].met is False
    assert t["agent CPU per DEL (sequential)"].met is False
    assert t["agent CPU per ADD (sequential)"].met is True
    assert t["50 concurrent ADDs"].met is False and "1 failures" in t["50 concurrent ADDs"].measured
    assert t["200 pods, 20 at a time"].met is False
    assert t["(stretch) ADD median, `ipam.arpProbeWait: 0`"].met is False
    assert t["RSS growth over 20,000 ADD/DEL cycles"].met is False


def test_pictures_without_this_runs_add_breakdown_are_not_met() -> None:
    data = good()
    data["agent_steps"] = {"add": {}}  # the agent's ADD lines were not recognised
    t = run(data)["pictures beside the tables"]
    assert t.met is False
    assert "no ADD breakdown from this run" in t.measured
    data = good()
    data["pictures"] = ["bench-concurrency.png"]
    assert run(data)["pictures beside the tables"].met is False


def test_leases_left_fail_the_del_target_and_short_soaks_are_not_a_verdict() -> None:
    data = good()
    data["sequential"]["leases_left"]["ours"]["left"] = 1
    data["soak"]["measured_cycles"] = 5000
    t = run(data)
    assert t["DEL median vs reference"].met is False
    assert t["RSS growth over 20,000 ADD/DEL cycles"].met is None


def test_an_empty_run_measures_nothing() -> None:
    targets = bt.evaluate({})
    assert targets and all(t.met is None for t in targets)


def test_breakdown_splits_outside_agent_into_exec_and_the_rest() -> None:
    parts = bt.add_breakdown(good())
    assert parts["exec"] == 12.0 and parts["socket"] == 3.0  # 15 ms outside the agent
    assert sum(parts.values()) == 55.0  # the ADD's wall time
    assert list(parts) == list(bt.ADD_SEGMENTS)


def test_sections_render() -> None:
    data = good()
    text = "\n".join(
        [
            bt.section_targets(data),
            bt.section_breakdown(data, {"exec": 16.0}),
            bt.section_concurrency(data),
            bt.section_floors(data),
            bt.section_fast(data),
            bt.section_soak(data),
        ]
    )
    assert "## Targets (issue 16)" in text and "**not met**" not in text
    assert "| 50 | ours | 350 ms |" in text
    assert "bench-add-breakdown.png" in text and "1.60x" in text
    assert "No soak result" in bt.section_soak({})


def test_concurrent_del_cost_is_split_by_who_paid_beside_the_p99() -> None:
    """The DEL burst's machine CPU per DEL, its exec trees, daemon and the rest, and the
    machine CPU over the CPUs (the burst's length with every CPU busy) beside the p99."""
    data = good()
    data["concurrent"][0]["del"].update(
        machine_cpu_ms=800.0, exec_cpu_ms=600.0, daemon_cpu_ms=150.0, cpus=2
    )
    data["concurrent"][1]["del"].update(
        machine_cpu_ms=550.0, exec_cpu_ms=500.0, daemon_cpu_ms=0.0, cpus=2
    )
    text = bt.section_concurrency(data)
    assert "| 50 | ours | 16.0 ms | 12.0 ms | 3.00 ms | 1.00 ms | 400 ms |" in text
    assert "| 50 | reference | 11.0 ms | 10.0 ms | 0.00 ms | 1.00 ms | 275 ms |" in text
    target = run(data)["50 concurrent DELs"]
    assert "machine CPU per DEL 16.0 ms vs 11.0 ms" in target.measured
    assert "machine / 2 CPUs" not in bt.section_concurrency(good())  # not measured: no table
