#!/usr/bin/env python3
"""Turns the output of `cargo bench --bench fanout` into the results the repository shows.

    scripts/bench_report.py --criterion DIR [DIR ...] [--log LOG [LOG ...]]
                            [--machine M] [--rustc R] [--commit C] [--date D] [--command CMD]

`scripts/bench_runs.sh` calls it after its runs, with one criterion directory and one log per
run and the provenance it recorded before the first. By hand, after one run:

    CRITERION_HOME=$PWD/target/bench-one cargo bench --bench fanout -- --noplot | tee target/bench-one.log
    scripts/bench_report.py --criterion target/bench-one --log target/bench-one.log \\
        --command "cargo bench --bench fanout"

Provenance not given is read from this machine and checkout (CPU model and cores, `rustc
--version`, `git rev-parse --short HEAD` with `-dirty` when tracked files differ, today's UTC
date); the command defaults to `cargo bench --bench fanout`.

It reads every `<group>/<implementation>/<parameter>/new/{estimates,benchmark}.json` under each
criterion directory, and the `slow_consumer paired:` lines of each log, and writes:

- `benches/README.md`, between `<!-- results:start -->` and `<!-- results:end -->`: the
  provenance line, the plot, one row per benchmark (median time per iteration, throughput, the
  ratio to fanout) and the slow-consumer pairs;
- `benches/results.svg`: deliveries per second against subscribers in `end_to_end`,
  `end_to_end_heap` and `publish_cost`, one line per implementation, log-log axes;
- `README.md`, between `<!-- perf:start -->` and `<!-- perf:end -->` if it has both markers:
  the performance table (at most six rows) and the provenance line. The table is also printed.

A time is the median over runs of criterion's median. A ratio is a peer's time over fanout's
(the engine's pull form) in the same group, parameter and run, then the median over runs: above
1, fanout is faster. Ratios within a run are steadier than times across runs, because the
machine's speed moves between processes more than within one.

Only the standard library is used, so it runs on a fresh machine.
"""

import argparse
import datetime
import json
import math
import os
import re
import statistics
import subprocess
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_README = os.path.join(ROOT, "benches", "README.md")
PLOT = os.path.join(ROOT, "benches", "results.svg")
README = os.path.join(ROOT, "README.md")
RESULTS_MARKERS = ("<!-- results:start -->", "<!-- results:end -->")
PERF_MARKERS = ("<!-- perf:start -->", "<!-- perf:end -->")

# Groups in the order `benches/fanout.rs` runs them.
GROUP_ORDER = [
    "machine",
    "publish_cost",
    "end_to_end",
    "end_to_end_heap",
    "liveview",
    "churn",
    "registry_lookup",
    "slow_consumer",
]
COLORS = {
    "fanout": "#d62728",
    "fanout-handlers": "#ff7f0e",
    "tokio-broadcast": "#1f77b4",
    "async-broadcast": "#2ca02c",
    "seed-port": "#7f7f7f",
}
OURS = "fanout"
HANDLERS = "fanout-handlers"
# The policy of the README's slow-consumer row: fanout's default.
DEFAULT_POLICY = "drop_oldest"


def load(criterion_dir):
    """One row per benchmark found under one run's criterion directory."""
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
                rows.append(
                    {
                        "group": group,
                        "peer": peer,
                        "param": param,
                        "median_ns": estimates["median"]["point_estimate"],
                        "elements": (bench.get("throughput") or {}).get("Elements"),
                    }
                )
    return rows


def merge(runs):
    """One row per benchmark, with its time in every run and the median over runs."""
    merged = {}
    for run_index, rows in enumerate(runs):
        for r in rows:
            key = (r["group"], r["peer"], r["param"])
            m = merged.setdefault(key, dict(r, times={}))
            m["times"][run_index] = r["median_ns"]
    for m in merged.values():
        m["median_ns"] = statistics.median(m["times"].values())
        m["per_second"] = m["elements"] / (m["median_ns"] * 1e-9) if m["elements"] else None
    return merged


def ratios(merged, group, param, peer):
    """The peer's time over fanout's, run by run (runs that have both)."""
    theirs, ours = merged.get((group, peer, param)), merged.get((group, OURS, param))
    if not theirs or not ours:
        return []
    return [theirs["times"][i] / ours["times"][i] for i in sorted(theirs["times"]) if i in ours["times"]]


def paired(log_paths):
    """The slow-consumer pairs printed in the logs: policy -> ratios, one per log."""
    found = defaultdict(list)
    for path in log_paths:
        with open(path, encoding="utf-8", errors="replace") as log:
            for line in log:
                if line.startswith("slow_consumer paired: "):
                    name, ratio = line.split()[2:4]
                    found[name].append(float(ratio))
    return found


def sig3(x):
    """Three significant digits, trailing zeros kept: 1.00, 12.0, 132."""
    return f"{x:#.3g}".rstrip(".")


def human_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{sig3(ns / scale)} {unit}"
    return f"{sig3(ns)} ns"


def human_rate(r):
    if r is None:
        return "—"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if r >= scale:
            return f"{sig3(r / scale)} {unit}/s"
    return f"{sig3(r)} /s"


def human_ratio(x):
    if x >= 10:
        return f"{x:.0f}x"
    if x >= 1:
        return f"{x:.1f}x"
    return f"{x:.2f}x"


def param_key(p):
    try:
        return (0, int(p))
    except ValueError:
        return (1, {"start": "0", "end": "1"}.get(p, p))


def group_key(g):
    return (GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER), g)


def provenance_line(p):
    return (
        f"Measured at commit `{p['commit']}` on {p['machine']}, `{p['rustc']}`, "
        f"{p['date']} (UTC), with `{p['command']}`."
    )


def full_table(merged, run_count):
    by_case = defaultdict(dict)
    for (group, peer, param), r in merged.items():
        by_case[(group, param)][peer] = r
    head = "| group | parameter | implementation | time / iteration | throughput | peer time / fanout time |"
    rule = "| --- | --- | --- | --- | --- | --- |"
    if run_count > 1:
        head += " per run |"
        rule += " --- |"
    lines = [head, rule]
    for group, param in sorted(by_case, key=lambda k: (group_key(k[0]), param_key(k[1]))):
        peers = by_case[(group, param)]
        for peer in sorted(peers, key=lambda p: (p != OURS, p)):
            r = peers[peer]
            ratio, per_run = "—", "—"
            if group == "machine":
                per_run = " ".join(human_time(r["times"][i]) for i in sorted(r["times"]))
            elif peer != OURS:
                rs = ratios(merged, group, param, peer)
                if rs:
                    ratio = human_ratio(statistics.median(rs))
                    per_run = " ".join(f"{x:.2f}" for x in rs)
            line = f"| {group} | {param} | {peer} | {human_time(r['median_ns'])} | {human_rate(r['per_second'])} | {ratio} |"
            if run_count > 1:
                line += f" {per_run} |"
            lines.append(line)
    return "\n".join(lines)


def paired_table(pairs, run_count):
    if not pairs:
        return ""
    lines = [
        "| policy (one of 1,000 sessions never reads) | the others' throughput against none stalled |"
        + (" per run |" if run_count > 1 else ""),
        "| --- | --- |" + (" --- |" if run_count > 1 else ""),
    ]
    for name, values in pairs.items():
        line = f"| {name} | {statistics.median(values):.3f} |"
        if run_count > 1:
            line += " " + " ".join(f"{v:.3f}" for v in values) + " |"
        lines.append(line)
    return "\n".join(lines)


def results_block(merged, pairs, run_count, prov):
    runs = "One run" if run_count == 1 else f"{run_count} runs: times are medians over the runs"
    parts = [
        provenance_line(prov),
        "",
        f"{runs}; a ratio is the peer's time over fanout's (`fanout`, the pull form) "
        "in the same run"
        + (", then the median over runs" if run_count > 1 else "")
        + ": above 1x, fanout is faster.",
        "",
        "![deliveries per second against subscribers, fanout and its peers](results.svg)",
        "",
        full_table(merged, run_count),
    ]
    if pairs:
        parts += [
            "",
            "Slow consumer, paired: each round of a policy's scenario is followed by a round with "
            "none stalled on the same 999 reading sessions; the figure is that baseline's time over "
            "the scenario's (below 1, the stalled session slowed the others).",
            "",
            paired_table(pairs, run_count),
        ]
    return "\n".join(parts)


def perf_table(merged, pairs, prov):
    """The README's table: at most six rows, fanout against the two broadcast channels."""
    peers = [("tokio-broadcast", "`tokio::sync::broadcast`"), ("async-broadcast", "`async-broadcast`")]
    rows = [
        ("end_to_end", "1000", "1 topic, 1,000 sessions (deliveries/s)"),
        ("end_to_end", "10000", "1 topic, 10,000 sessions"),
        ("end_to_end_heap", "10000", "the same, payload allocated per message"),
        ("liveview", "10k_sessions_5_of_1k_topics", "LiveView: 10,000 sessions, 5 of 1,000 topics"),
        ("churn", "100000", "subscribe + unsubscribe, 100,000 on the topic (time)"),
    ]
    lines = [
        "| scenario | fanout | fanout, handlers | " + " | ".join(label for _, label in peers) + " |",
        "| --- | --- | --- |" + " --- |" * len(peers),
    ]

    def shown(r):
        return human_rate(r["per_second"]) if r["per_second"] else human_time(r["median_ns"])

    for group, param, label in rows:
        ours = merged.get((group, OURS, param))
        if not ours:
            continue
        handlers = merged.get((group, HANDLERS, param))
        cells = [shown(ours), shown(handlers) if handlers else "—"]
        for peer, _ in peers:
            theirs = merged.get((group, peer, param))
            rs = ratios(merged, group, param, peer)
            cells.append(f"{shown(theirs)} ({human_ratio(statistics.median(rs))})" if theirs and rs else "—")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if DEFAULT_POLICY in pairs:
        lines.append(
            f"| 1 of 1,000 stalled (`{DEFAULT_POLICY}`): others' throughput vs none | {statistics.median(pairs[DEFAULT_POLICY]):.2f}x |"
            + " — |" * (len(peers) + 1)
        )
    return "\n".join(
        lines
        + [
            "",
            "In brackets: the peer's time over the pull form's (`recv_many`) in the same run; above "
            "1x, fanout is faster. Handlers: `subscribe_topic`, a task per session. "
            + provenance_line(prov)
            + " All results: [`benches/README.md`](benches/README.md).",
        ]
    )


def svg(merged, prov, groups=("end_to_end", "end_to_end_heap", "publish_cost")):
    rows = list(merged.values())
    panels = [g for g in groups if any(r["group"] == g and r["per_second"] for r in rows)]
    width, height, margin = 460, 360, 60
    total_width = width * max(len(panels), 1)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_width}" height="{height}" '
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
        plot_w, plot_h = width - margin - 20, height - 2 * margin - 20

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
        out.append(f'<rect x="{left}" y="{margin}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
        for e in range(int(y0), int(y1) + 1):
            y = margin + plot_h - (e - y0) / (y1 - y0) * plot_h
            out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
            out.append(f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">1e{e}</text>')
        for x in sorted(set(xs)):
            out.append(f'<text x="{px(x):.1f}" y="{margin + plot_h + 15}" text-anchor="middle">{x:,}</text>')
        out.append(f'<text x="{left + plot_w / 2}" y="{margin + plot_h + 32}" text-anchor="middle">subscribers</text>')
        for j, (peer, pts) in enumerate(sorted(data.items(), key=lambda kv: (kv[0] != OURS, kv[0]))):
            pts.sort()
            color = COLORS.get(peer, "#000")
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
            for x, y in pts:
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>')
            out.append(f'<text x="{left + 8}" y="{margin + 14 + 13 * j}" fill="{color}">{peer}</text>')
    footer = f"commit {prov['commit']}, {prov['machine']}, {prov['rustc']}, {prov['date']}: {prov['command']}"
    out.append(f'<text x="10" y="{height - 10}" fill="#555">{escape(footer)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def replace_between(path, markers, body, required):
    """Replaces what lies between the two marker lines of `path`; returns whether it did."""
    start, end = markers
    with open(path, encoding="utf-8") as f:
        text = f.read()
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        if required:
            sys.exit(f"{os.path.relpath(path, ROOT)} has no `{start}` ... `{end}` markers")
        return False
    text = pattern.sub(lambda _: f"{start}\n{body}\n{end}", text, count=1)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return True


def run(*command):
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def machine():
    model = next(
        (line.split(":", 1)[1].strip() for line in run("lscpu").splitlines() if line.startswith("Model name:")),
        "unknown CPU",
    )
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def commit():
    dirty = run(
        "git", "status", "--porcelain", "--untracked-files=no", "--", ".",
        ":(exclude)README.md", ":(exclude)benches/README.md", ":(exclude)benches/results.svg",
    )
    return run("git", "rev-parse", "--short", "HEAD") + ("-dirty" if dirty else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--criterion", nargs="+", required=True, metavar="DIR", help="one criterion directory per run")
    parser.add_argument("--log", nargs="*", default=[], metavar="LOG", help="the bench binary's output, one per run")
    parser.add_argument("--machine", help="CPU model and cores (default: from lscpu)")
    parser.add_argument("--rustc", help="the compiler (default: `rustc --version`)")
    parser.add_argument("--commit", help="the commit measured (default: HEAD, -dirty if tracked files differ)")
    parser.add_argument("--date", help="UTC date of the run (default: today)")
    parser.add_argument("--command", default="cargo bench --bench fanout", help="the command that produced the results")
    args = parser.parse_args()

    prov = {
        "machine": args.machine or machine(),
        "rustc": args.rustc or run("rustc", "--version"),
        "commit": args.commit or commit(),
        "date": args.date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "command": args.command,
    }
    runs = [load(d) for d in args.criterion]
    if not any(runs):
        sys.exit(f"no criterion results under {', '.join(args.criterion)}")
    merged = merge(runs)
    pairs = paired(args.log)

    replace_between(BENCH_README, RESULTS_MARKERS, results_block(merged, pairs, len(runs), prov), required=True)
    with open(PLOT, "w", encoding="utf-8") as f:
        f.write(svg(merged, prov))
    table = perf_table(merged, pairs, prov)
    wrote_readme = replace_between(README, PERF_MARKERS, table, required=False)
    print(table)
    print()
    print(
        f"{len(merged)} benchmarks, {len(runs)} run(s): wrote benches/README.md (results block), "
        "benches/results.svg"
        + (", README.md (perf block)" if wrote_readme else f"; README.md has no {PERF_MARKERS[0]} markers, left as is")
    )


if __name__ == "__main__":
    main()
