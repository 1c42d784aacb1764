"""What ``python -m bench`` makes of its rows: the printed table, the JSON file, and the
performance page of the docs (docs/performance.md with its chart docs/img/performance.png).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
from pathlib import Path
from typing import Any

from bench._suite import Result, Row, advantage

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    """The machine the numbers come from."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
                    break
    except OSError:
        pass
    return {"cpu": cpu or platform.processor() or "unknown", "cpus": os.cpu_count(),
            "memory_gib": round(mem_kib / 1024 / 1024, 1), "kernel": platform.release(),
            "python": platform.python_version(), "system": platform.system()}


def to_json(result: Result, quick: bool) -> dict[str, Any]:
    return {"date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "quick": quick, "machine": machine(), "rows": result.rows,
            "notes": result.notes, "failures": result.failures}


def write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")


def _num(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 1e5:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.3f}x" if value < 0.1 else f"{value:.2f}x"


def table_lines(rows: list[Row]) -> list[str]:
    """One block per metric: childkit's value, then each peer and bare limit beside it.

    "vs childkit" is how many times better childkit is than the peer (> 1: childkit
    wins); for a bare limit it is how many times the bare limit childkit costs.
    """
    # Columns as wide as their longest name: a metric or peer is never cut short.
    mw = max([44, *(len(r["metric"]) for r in rows)])
    nw = max([44, *(len(n) for r in rows for n in r["peers"]),
              *(len(f"bare: {n}") for r in rows for n in r["bare"])])
    header = (f"{'metric':{mw}s} {'unit':6s} {'childkit':>10s}  {'against':{nw}s} "
              f"{'value':>10s} {'vs childkit':>12s}")
    lines = [header, "-" * len(header)]
    for r in rows:
        first = True
        others = [(name, v, False) for name, v in r["peers"].items()]
        others += [(f"bare: {name}", v, True) for name, v in r["bare"].items()]
        if not others:
            others = [("", math.nan, False)]
        for name, value, is_bare in others:
            if is_bare:
                cost = r["childkit"] / value if r["better"] == "lower" and value > 0 \
                    else value / r["childkit"] if r["childkit"] > 0 else math.nan
                rel = f"{_ratio(cost)} bare"
            elif name:
                rel = f"{_ratio(advantage(r, value))}"
            else:
                rel = ""
            left = (f"{r['metric']:{mw}s} {r['unit']:6s} {_num(r['childkit']):>10s}"
                    if first else " " * (mw + 18))
            lines.append(f"{left}  {name:{nw}s} "
                         f"{_num(value) if name else '':>10s} {rel:>12s}")
            first = False
        if r.get("goal"):
            lines.append(" " * (mw + 20) + f"goal: {r['goal']}")
    return lines


def print_report(data: dict[str, Any]) -> None:
    m = data["machine"]
    quick = " (quick: sizes too small to compare)" if data["quick"] else ""
    print(f"childkit benchmarks, {data['date']}{quick}")
    print(f"machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, Linux {m['kernel']}, "
          f"Python {m['python']}")
    print("'vs childkit': how many times better childkit is than the peer (> 1: childkit "
          "wins); for a bare limit, how many times that limit childkit costs.")
    print()
    for line in table_lines(data["rows"]):
        print(line)
    for note in data["notes"]:
        print(f"note: {note}")
    for failure in data["failures"]:
        print(f"FAILED: {failure}")


# ---------------------------------------------------------------------------- docs
def draw_chart(data: dict[str, Any], path: Path) -> None:
    """One horizontal bar chart: childkit's advantage over each peer, per metric, on a
    log scale (right of 1: childkit is better), with the bare limits as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels: list[str] = []
    values: list[float] = []
    colors: list[str] = []
    for r in data["rows"]:
        for name, value in r["peers"].items():
            adv = advantage(r, value)
            if not math.isnan(adv):
                labels.append(f"{r['metric'][:40]} | {name[:38]}")
                values.append(adv)
                colors.append("tab:green" if adv >= 1 else "tab:red")
        for name, value in r["bare"].items():
            adv = advantage(r, value)
            if not math.isnan(adv):
                labels.append(f"{r['metric'][:40]} | bare: {name[:32]}")
                values.append(adv)
                colors.append("tab:gray")
    height = max(3.0, 0.28 * len(labels) + 1.5)
    fig, ax = plt.subplots(figsize=(12, height))
    ys = list(range(len(labels)))[::-1]
    # Bars grow from 1 (a tie): right for childkit ahead, left for childkit behind.
    ax.barh(ys, [v - 1.0 for v in values], left=1.0, color=colors)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("how many times childkit beats it (log scale; right of 1: childkit is "
                  "better)\ngreen/red: peers; gray: the machine's bare limit")
    m = data["machine"]
    ax.set_title(f"childkit vs peers, {data['date']}: {m['cpu']}, {m['cpus']} CPUs",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _md_table(rows: list[Row]) -> list[str]:
    out = ["| metric | unit | childkit | against | value | vs childkit |",
           "|---|---|---:|---|---:|---:|"]
    for r in rows:
        first = True
        others = [(name, v, False) for name, v in r["peers"].items()]
        others += [(f"bare: {name}", v, True) for name, v in r["bare"].items()]
        for name, value, is_bare in others or [("", math.nan, False)]:
            if is_bare:
                cost = r["childkit"] / value if r["better"] == "lower" else value / r["childkit"]
                rel = f"{_ratio(cost)} the limit"
            else:
                rel = _ratio(advantage(r, value)) if name else ""
            metric = f"{r['metric']}" if first else ""
            unit = r["unit"] if first else ""
            ck = _num(r["childkit"]) if first else ""
            out.append(f"| {metric} | {unit} | {ck} | {name} | "
                       f"{_num(value) if name else ''} | {rel} |")
            first = False
    return out


def write_docs(data: dict[str, Any], page: Path, chart: Path) -> None:
    """Write docs/performance.md and its chart from one run's data."""
    draw_chart(data, chart)
    m = data["machine"]
    rel_chart = os.path.relpath(chart, page.parent)
    lines = [
        "# Performance",
        "",
        "<!-- Generated by `python -m bench --write-docs` (bench/_report.py): edit that, "
        "not this page. -->",
        "",
        f"Measured on **{data['date']}** on {m['cpu']} ({m['cpus']} CPUs, "
        f"{m['memory_gib']} GiB, Linux {m['kernel']}), Python {m['python']}"
        + (", **quick mode** (sizes too small to compare: not representative)"
           if data["quick"] else "") + ".",
        "",
        "Every benchmark runs in one process tree, beside its peers, and each value is the "
        "median of repeated runs (the contenders are interleaved, so that load drifting "
        "over the run hits them alike). *vs childkit* is how many times better childkit "
        "is than the peer (above 1: childkit wins); for a *bare* limit of the machine (a "
        "raw socketpair ping-pong, memcpy, fork + exit, in C unless said otherwise) it is "
        "how many times that limit childkit costs. The sync round trip also has a Python "
        "floor: a bare request/reply that does only what any Python IPC with typed "
        "parcels and a stub must do (the same syscalls, a frame check, one parcel each "
        "side, the stub's call), with no connection, locks or thread pool around it. "
        "A shared 2-CPU machine is noisy: read ratios, not absolute numbers.",
        "",
        f"![childkit against its peers]({rel_chart})",
        "",
        "## Results",
        "",
        *_md_table(data["rows"]),
        "",
    ]
    goals = [(r["metric"], r["goal"]) for r in data["rows"] if r.get("goal")]
    if goals:
        lines += ["## Targets", "",
                  "As each benchmark states them; a ratio *vs* a peer there is childkit's "
                  "value divided by the peer's (for times: below 1 is faster), the inverse "
                  "of the *vs childkit* column above.", "",
                  "| metric | target |", "|---|---|"]
        lines += [f"| {metric} | {goal} |" for metric, goal in goals]
        lines.append("")
    if data["notes"] or data["failures"]:
        lines += ["## Not measured in this run", ""]
        lines += [f"- {n}" for n in data["notes"]]
        lines += [f"- failed: {f}" for f in data["failures"]]
        lines.append("")
    lines += [
        "## Running it",
        "",
        "```bash",
        "pip install -e '.[bench]'        # numpy, matplotlib, loky, Pyro5, RPyC",
        "python -m bench                  # every benchmark; prints the table,",
        "                                 # writes bench/results/latest.json",
        "python -m bench --quick          # small sizes: checks that it runs (CI)",
        "python -m bench --write-docs     # also rewrites this page and its chart",
        "python -m bench --write-docs --from-json bench/results/latest.json",
        "```",
        "",
        "The peers: `multiprocessing` (Manager proxy, Queue, Pipe, ProcessPoolExecutor, "
        "fork and spawn Process), loky's reusable executor, Pyro5 and RPyC over a Unix "
        "socket. The bare limits need `gcc` (bench/bare_c.c is compiled into a "
        "temporary directory at run time).",
        "",
    ]
    page.write_text("\n".join(lines))
