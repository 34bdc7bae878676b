#!/usr/bin/env python3
"""Turn criterion's output into the README's performance table and plot.

    cargo bench --bench fanout | tee target/bench.log
    python3 scripts/bench_report.py [target/criterion] [docs] [target/bench.log]

Several runs (this host's results move up to 2x from one process to the next): copy
`target/criterion` and the log away after each run and pass them comma-separated,
`run1/criterion,run2/criterion docs run1.log,run2.log`. Each time is then the median over the
runs, and each ratio the median over runs of the ratio within the run (peers in one process).

Reads every `<group>/<peer>/<parameter>/new/{estimates,benchmark}.json` under the criterion
directory and writes, into the output directory:

- `bench-results.md`: one row per benchmark (median time per iteration, median throughput,
  and the ratio of fanout to each peer in the same group and parameter);
- `fanout-vs-peers.svg`: deliveries per second against subscriber count for the
  `end_to_end`, `end_to_end_heap` and `publish_cost` groups, one line per implementation,
  log-log axes.

With the bench's log, the slow-consumer ratios it prints (each policy's throughput against a
baseline round run right after each of its rounds) are added to `bench-results.md`.

Only the standard library is used, so it runs on a fresh machine.
"""

import json
import math
import os
import statistics
import sys
from collections import defaultdict

COLORS = {
    "fanout": "#d62728",
    "fanout-handlers": "#ff7f0e",
    "tokio-broadcast": "#1f77b4",
    "async-broadcast": "#2ca02c",
    "seed-port": "#7f7f7f",
    "prototype-topic-log": "#9467bd",
}


def load(criterion_dir):
    rows = []
    for group in sorted(os.listdir(criterion_dir)):
        group_dir = os.path.join(criterion_dir, group)
        if not os.path.isdir(group_dir) or group == "report":
            continue
        for peer in sorted(os.listdir(group_dir)):
            peer_dir = os.path.join(group_dir, peer)
            if not os.path.isdir(peer_dir) or peer == "report":
                continue
            for param in sorted(os.listdir(peer_dir)):
                new = os.path.join(peer_dir, param, "new")
                try:
                    with open(os.path.join(new, "estimates.json")) as f:
                        estimates = json.load(f)
                    with open(os.path.join(new, "benchmark.json")) as f:
                        bench = json.load(f)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                median_ns = estimates["median"]["point_estimate"]
                elements = (bench.get("throughput") or {}).get("Elements")
                rows.append(
                    {
                        "group": group,
                        "peer": peer,
                        "param": param,
                        "median_ns": median_ns,
                        "elements": elements,
                        "per_second": elements / (median_ns * 1e-9) if elements else None,
                    }
                )
    return rows


def human_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.2f} {unit}"
    return f"{ns:.0f} ns"


def human_rate(r):
    if r is None:
        return "—"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if r >= scale:
            return f"{r / scale:.2f} {unit}/s"
    return f"{r:.0f} /s"


def param_key(p):
    try:
        return (0, int(p))
    except ValueError:
        return (1, p)


def merge(runs):
    """One row per benchmark: times from every run, the median for the table."""
    merged = {}
    for run_index, rows in enumerate(runs):
        for r in rows:
            key = (r["group"], r["peer"], r["param"])
            m = merged.setdefault(key, dict(r, times={}))
            m["times"][run_index] = r["median_ns"]
    for m in merged.values():
        m["median_ns"] = statistics.median(m["times"].values())
        if m["elements"]:
            m["per_second"] = m["elements"] / (m["median_ns"] * 1e-9)
    return list(merged.values())


def table(rows, run_count=1):
    by_case = defaultdict(dict)
    for r in rows:
        by_case[(r["group"], r["param"])][r["peer"]] = r
    lines = [
        "| group | parameter | implementation | median time / iteration | throughput | fanout vs this | ratio per run |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (group, param) in sorted(by_case, key=lambda k: (k[0], param_key(k[1]))):
        peers = by_case[(group, param)]
        ours = peers.get("fanout")
        for peer in sorted(peers, key=lambda p: (p != "fanout", p)):
            r = peers[peer]
            ratio, per_run = "—", "—"
            if group == "machine":
                # Not a peer: list the figure itself, run by run.
                per_run = " ".join(human_time(r["times"][i]) for i in sorted(r["times"]))
            elif ours and peer != "fanout":
                ratios = [r["times"][i] / ours["times"][i] for i in r["times"] if i in ours["times"]]
                if ratios:
                    ratio = f"{statistics.median(ratios):.1f}x"
                    per_run = " ".join(f"{x:.2f}" for x in ratios)
            lines.append(
                f"| {group} | {param} | {peer} | {human_time(r['median_ns'])} | {human_rate(r['per_second'])} | {ratio} | {per_run} |"
            )
    header = f"Medians over {run_count} run(s) of `cargo bench --bench fanout`; ratios are within each run.\n\n"
    return header + "\n".join(lines) + "\n"


def svg(rows, groups=("end_to_end", "end_to_end_heap", "publish_cost")):
    panels = [g for g in groups if any(r["group"] == g and r["per_second"] for r in rows)]
    width, height, margin = 460, 340, 60
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width * max(len(panels), 1)}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    for i, group in enumerate(panels):
        data = defaultdict(list)
        for r in rows:
            if r["group"] == group and r["per_second"]:
                try:
                    data[r["peer"]].append((int(r["param"]), r["per_second"]))
                except ValueError:
                    pass
        xs = [x for pts in data.values() for x, _ in pts]
        ys = [y for pts in data.values() for _, y in pts]
        if not xs:
            continue
        x0, x1 = math.log10(min(xs)), math.log10(max(xs))
        y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
        x1 = x1 if x1 > x0 else x0 + 1
        y1 = y1 if y1 > y0 else y0 + 1
        left = i * width + margin
        plot_w, plot_h = width - margin - 20, height - 2 * margin

        def px(x):
            return left + (math.log10(x) - x0) / (x1 - x0) * plot_w

        def py(y):
            return margin + plot_h - (math.log10(y) - y0) / (y1 - y0) * plot_h

        title = {
            "end_to_end": "end to end: deliveries/s (one topic, static payload)",
            "end_to_end_heap": "end to end: deliveries/s (payload allocated per broadcast)",
            "publish_cost": "publisher side: subscribers served per second",
        }.get(group, group)
        out.append(f'<text x="{left}" y="{margin - 25}" font-size="13">{title}</text>')
        out.append(
            f'<rect x="{left}" y="{margin}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>'
        )
        for e in range(int(y0), int(y1) + 1):
            y = margin + plot_h - (e - y0) / (y1 - y0) * plot_h
            out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
            out.append(f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">1e{e}</text>')
        for x in sorted(set(xs)):
            out.append(f'<text x="{px(x):.1f}" y="{margin + plot_h + 15}" text-anchor="middle">{x:,}</text>')
        out.append(
            f'<text x="{left + plot_w / 2}" y="{margin + plot_h + 32}" text-anchor="middle">subscribers</text>'
        )
        for j, (peer, pts) in enumerate(sorted(data.items())):
            pts.sort()
            color = COLORS.get(peer, "#000")
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
            for x, y in pts:
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>')
            out.append(
                f'<text x="{left + 8}" y="{margin + 14 + 13 * j}" fill="{color}">{peer}</text>'
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def paired_section(log_paths):
    """The `slow_consumer paired:` lines of the bench logs, as a table (median over logs)."""
    ratios = defaultdict(list)
    for log_path in log_paths:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            for line in log:
                if line.startswith("slow_consumer paired: "):
                    name, ratio = line.split()[2:4]
                    ratios[name].append(float(ratio))
    if not ratios:
        return ""
    lines = []
    for name, values in ratios.items():
        m = statistics.median(values)
        listed = " ".join(f"{v:.3f}" for v in values)
        lines.append(f"| {name} | {m:.3f} | {(1 - m) * 100:+.1f}% | {listed} |")
    return (
        "\n## Slow consumer, paired with the baseline\n\n"
        "Each round of a policy's scenario is followed by a round of the baseline (nobody stalled) on the\n"
        "same sessions; the ratio is the baseline's total time over the scenario's (throughput relative\n"
        "to the baseline; below 1 the stalled session slowed the others).\n\n"
        "| policy (one of 1,000 sessions stalled) | throughput vs baseline (median) | slowdown | per run |\n"
        "| --- | --- | --- | --- |\n" + "\n".join(lines) + "\n"
    )


def main():
    criterion_dirs = (sys.argv[1] if len(sys.argv) > 1 else "target/criterion").split(",")
    out_dir = sys.argv[2] if len(sys.argv) > 2 else "docs"
    runs = [load(d) for d in criterion_dirs]
    if not any(runs):
        sys.exit(f"no criterion results under {criterion_dirs}; run `cargo bench --bench fanout` first")
    rows = merge(runs)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench-results.md"), "w") as f:
        f.write(table(rows, len(runs)))
        if len(sys.argv) > 3:
            f.write(paired_section(sys.argv[3].split(",")))
    with open(os.path.join(out_dir, "fanout-vs-peers.svg"), "w") as f:
        f.write(svg(rows))
    print(f"wrote {out_dir}/bench-results.md and {out_dir}/fanout-vs-peers.svg from {len(rows)} benchmarks, {len(runs)} run(s)")


if __name__ == "__main__":
    main()
