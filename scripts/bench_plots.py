"""The pictures of `make bench` (issue 16, target 8), drawn with matplotlib (dev extra).

bench-concurrency.png: ADD and DEL p50/p99 against the number of concurrent execs, both
plugins. bench-add-breakdown.png: one ADD's time split into segments (stacked bars), before
(docs/bench-before.json) and this run (and this run with `arpProbeWait: 0`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt
from bench_stats import ok_times
from bench_targets import ADD_SEGMENTS, add_breakdown, concurrent, median, p99

STYLE = {"ours": ("tab:blue", "cni-bridge-dhcp"), "reference": ("tab:orange", "reference")}


def draw_concurrency(data: Mapping[str, Any], path: Path) -> bool:
    levels = sorted({int(r.get("n", 0)) for r in data.get("concurrent", [])})
    if not levels:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, op in zip(axes, ("add", "del"), strict=True):
        for side, (colour, label) in STYLE.items():
            xs, p50s, p99s = [], [], []
            for n in levels:
                run = concurrent(data, n, side)
                times = ok_times(run.get(op, {}).get("ops", [])) if run else []
                if times:
                    xs.append(n)
                    p50s.append(median(times))
                    p99s.append(p99(times))
            ax.plot(xs, p50s, "o-", color=colour, label=f"{label} p50")
            ax.plot(xs, p99s, "s--", color=colour, label=f"{label} p99")
        ax.set_title(f"{op.upper()} latency against concurrency")
        ax.set_xlabel("concurrent execs (N)")
        ax.set_xticks(levels)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("ms (log scale)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def draw_breakdown(data: Mapping[str, Any], before: Mapping[str, float] | None, path: Path) -> bool:
    bars = [("before", dict(before or {})), ("this run", add_breakdown(data))]
    bars.append(("this run,\narpProbeWait 0", add_breakdown(data, "arpProbeWait 0")))
    bars = [(name, values) for name, values in bars if values]
    if not bars:
        return False
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colours = plt.get_cmap("tab10")
    for i, name in enumerate(name for name, _ in bars):
        bottom = 0.0
        for k, (key, label) in enumerate(ADD_SEGMENTS.items()):
            value = bars[i][1].get(key, 0.0)
            ax.bar(name, value, bottom=bottom, color=colours(k), label=label if i == 0 else None)
            bottom += value
        ax.text(i, bottom, f"{bottom:.0f} ms", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("ms (medians per segment)")
    ax.set_title("Where one ADD's time goes")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def draw(data: Mapping[str, Any], before: Mapping[str, float] | None, out: Path) -> list[str]:
    """Draw both pictures into ``out``; the names of those drawn."""
    out.mkdir(parents=True, exist_ok=True)
    made = []
    if draw_concurrency(data, out / "bench-concurrency.png"):
        made.append("bench-concurrency.png")
    if draw_breakdown(data, before, out / "bench-add-breakdown.png"):
        made.append("bench-add-breakdown.png")
    return made
