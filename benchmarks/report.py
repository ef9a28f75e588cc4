"""Summaries of the rounds, the terminal table, the JSON file and the ratio chart.

The ratio of a loop in a cell is computed per round, against stock asyncio
measured in the same round of the same cell (seconds apart), and only then
summarised (median, min-max): the machine's drift between rounds cancels
out of each ratio instead of adding to it.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.loops import C_REFERENCE, LABELS

BASELINE = "asyncio"
# what each section measures: (throughput key, unit, CPU key, CPU unit, CPU-share key)
NET_KEYS = ("rps", "req/s", "cpu_us_per_req", "CPU us/req", "server_util")
MICRO_KEYS = ("ops_per_s", "ops/s", "cpu_us_per_op", "CPU us/op", "cpu_util")


def _median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize(rounds: dict[str, list[dict[str, Any]]], keys: tuple[str, ...]) -> dict[str, Any]:
    """Per loop: median throughput, per-round ratio to asyncio, median CPU cost."""
    metric, _, cpu, _, share = keys
    base = rounds.get(BASELINE, [])
    out: dict[str, Any] = {}
    for loop, results in rounds.items():
        ok = [r for r in results if metric in r]
        errors = sorted({r["error"] for r in results if "error" in r})
        verified = [r["verified"] for r in results if "verified" in r and metric not in r]
        ratios = [r[metric] / b[metric] for r, b in zip(results, base)
                  if metric in r and metric in b and b[metric] > 0]
        cpu_ratios = [b[cpu] / r[cpu] for r, b in zip(results, base)
                      if r.get(cpu) and b.get(cpu)]
        out[loop] = {
            "rounds_ok": len(ok) + len(verified),
            "rounds": len(results),
            "errors": errors,
            "verified": sum(verified) if verified else None,
            "median": _median(r[metric] for r in ok),
            "ratio_median": _median(ratios),
            "ratio_min": min(ratios) if ratios else None,
            "ratio_max": max(ratios) if ratios else None,
            "cpu_median": _median(r.get(cpu) for r in ok),
            # asyncio's CPU per operation / this loop's, per round: > 1 is cheaper
            "cpu_ratio_median": _median(cpu_ratios),
            "share_median": _median(r.get(share) for r in ok),
            "client_median": _median(r.get("client_util") for r in ok),
            "other_median": _median(r.get("other_util") for r in ok),
        }
    return out


# -- terminal table -------------------------------------------------------------------

def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.0f}%"


def _ratio(s: dict[str, Any], loop: str) -> str:
    if loop == BASELINE and s["median"] is not None:
        return "1.00"
    if s["ratio_median"] is None:
        return "-"
    return f"{s['ratio_median']:.2f} ({s['ratio_min']:.2f}-{s['ratio_max']:.2f})"


def _row(loop: str, s: dict[str, Any], net: bool) -> str:
    label = f"  {LABELS.get(loop, loop):<10}"
    if s["median"] is None and s["verified"] is not None:
        return f"{label} verified ({s['verified']} {'requests' if net else 'operations'} checked)"
    if s["median"] is None:
        return f"{label} n/a (error: {s['errors'][0] if s['errors'] else 'no result'})"
    row = (f"{label} {s['median']:>12,.0f}  {_ratio(s, loop):<18} {s['cpu_median']:>10.2f}"
           f" {_pct(s['share_median']):>7}")
    if net:
        row += f" {_pct(s['client_median']):>7}"
    row += f" {_pct(s['other_median']):>7}"
    if s["errors"]:
        row += f"  [{s['rounds'] - s['rounds_ok']}/{s['rounds']} rounds failed: {s['errors'][0]}]"
    return row


def noise_note(entries: list[dict[str, Any]]) -> str | None:
    """A warning when other processes took much CPU during the timed windows."""
    others = _median(s["other_median"] for e in entries for s in e["summary"].values())
    if others is None or others < 0.25:
        return None
    return (f"note: other processes used a median {others:.0%} of a CPU during the timed "
            f"windows; req/s and their ratios are noisy (CPU per request is steadier); "
            f"--nice -10 gives the measured processes precedence.")


def headroom_note(entries: list[dict[str, Any]]) -> str | None:
    """How far the C reference server outran the fastest Python loop, per cell."""
    margins = []
    for entry in entries:
        summary = entry["summary"]
        c = summary.get(C_REFERENCE, {}).get("median")
        best = max((s["median"] for lp, s in summary.items()
                    if lp != C_REFERENCE and s["median"] is not None), default=None)
        if c and best:
            margins.append((c / best, entry["name"]))
    if not margins:
        return None
    low, low_cell = min(margins)
    return (f"C reference / fastest Python loop, same client: median "
            f"{statistics.median(m for m, _ in margins):.2f}x, lowest {low:.2f}x ({low_cell})")


def table(title: str, entries: list[dict[str, Any]], net: bool) -> str:
    keys = NET_KEYS if net else MICRO_KEYS
    share = "server" if net else "proc"
    head = (f"{title:<13}{keys[1]:>12}  {'vs asyncio':<18} {keys[3]:>10} {share:>7}"
            + (f" {'client':>7}" if net else "") + f" {'others':>7}")
    lines = [head, "-" * len(head)]
    for entry in entries:
        lines.append(entry["name"])
        for loop, s in entry["summary"].items():
            lines.append(_row(loop, s, net))
    notes = [headroom_note(entries) if net else None, noise_note(entries)]
    lines += [note for note in notes if note]
    return "\n".join(lines)


# -- files ----------------------------------------------------------------------------

def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")


def write_chart(path: Path, results: dict[str, Any]) -> str | None:
    """Grouped bars of the median ratio to asyncio (min-max whiskers); None or why not."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed"
    sections = [(title, results[key]) for key, title in
                (("net", "network (req/s)"), ("micro", "loop heart (ops/s)")) if results[key]]
    if not sections:
        return "nothing to chart"
    fig, axes = plt.subplots(len(sections), 1, squeeze=False,
                             figsize=(max(10, 0.9 * max(len(e) for _, e in sections) + 3),
                                      5 * len(sections)))
    colors = {"uringloop": "#d62728", "uvloop": "#1f77b4", C_REFERENCE: "#7f7f7f"}
    for ax, (title, entries) in zip(axes[:, 0], sections):
        loops = [lp for lp in entries[0]["summary"] if lp != BASELINE]
        width = 0.8 / max(len(loops), 1)
        for i, loop in enumerate(loops):
            xs = [j + (i - (len(loops) - 1) / 2) * width for j in range(len(entries))]
            for x, entry in zip(xs, entries):
                s = entry["summary"][loop]
                if s["ratio_median"] is None:
                    ax.text(x, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=7,
                            transform=ax.get_xaxis_transform())
                    continue
                ax.bar(x, s["ratio_median"], width, color=colors.get(loop, "#2ca02c"),
                       yerr=[[s["ratio_median"] - s["ratio_min"]],
                             [s["ratio_max"] - s["ratio_median"]]], capsize=2,
                       label=LABELS.get(loop, loop))
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="asyncio = 1")
        ax.set_xticks(range(len(entries)))
        ax.set_xticklabels([e["name"] for e in entries], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("throughput / asyncio (same round)")
        ax.set_title(title)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=8)
    meta = results["meta"]
    fig.suptitle(f"uringloop benchmarks {meta['timestamp']}: median of {meta['rounds']} rounds, "
                 f"whiskers min-max", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
