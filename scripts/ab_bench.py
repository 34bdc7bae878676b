#!/usr/bin/env python3
"""A/B comparison of two builds of the criterion bench binary `benches/fanout.rs`.

Runs the two binaries alternately (A, B, A, B, ...) on the same filter, so slow drifts of the
machine's speed (other tenants, thermal state) hit both sides alike, and reports per benchmark
the median of each side's per-run times and the ratio B/A (below 1, B is faster).

    cargo bench --bench fanout --no-run     # prints the binary: target/release/deps/fanout-<hash>
    cp target/release/deps/fanout-<hash> /tmp/A
    # change the code, build again, copy the new binary to /tmp/B
    scripts/ab_bench.py /tmp/A /tmp/B '^end_to_end/fanout/' --rounds 5

The times compared are criterion's point estimates (the middle of `time: [lo mid hi]`); each
benchmark warms up and measures for its group's settings in `benches/fanout.rs`.

On a shared or virtual machine a binary's time for a scenario can move a long way from one
process to the next, more than a small change does: use five rounds or more, and read the
per-round columns, not only the medians. "B/A fastest" compares each side's fastest run, the
steadier figure for a change's own cost where a slow mode comes and goes between processes.
Every run also measures a cache line's round trip between two cores
(`machine/core_to_core_round_trip`, listed per round beside the times): a virtual machine's
vCPUs may sit on near or far cores, and everything that moves lines between cores moves with
it, so compare rounds at similar round trips.

With `--paired ID` it also reports, per benchmark, the median over runs of its time divided by
the time of benchmark ID *in the same run* (e.g. each slow-consumer policy against the
`none_stalled` baseline): ratios within one process, which the noise between processes
disturbs far less than times across processes. Pass the same binary as A and B to just repeat.

Criterion's output of these runs goes to a temporary directory, not to `target/criterion`.
"""
import argparse
import re
import os
import statistics
import subprocess
import sys
import tempfile

UNITS = {"ps": 1e-12, "ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
LINE = re.compile(r"^(\S+)\s*time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", re.M)


def run(binary, bench_filter, criterion_home):
    # Every run also measures the machine's core-to-core round trip (the `machine` group), so
    # each round's placement of the vCPUs shows beside its times.
    out = subprocess.run(
        [binary, "--bench", f"({bench_filter})|^machine/", "--noplot"],
        capture_output=True, text=True, check=True,
        env=dict(os.environ, CRITERION_HOME=criterion_home),
    ).stdout
    # criterion prints a long id on its own line and `time:` on the next
    out = re.sub(r"^(\S+/\S+)\n\s+time:", r"\1 time:", out, flags=re.M)
    return {name: float(value) * UNITS[unit] for name, value, unit in LINE.findall(out)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("filter")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--paired", metavar="ID", help="also report times relative to benchmark ID, run by run")
    args = parser.parse_args()
    times = {"A": {}, "B": {}}
    paired = {"A": {}, "B": {}}
    with tempfile.TemporaryDirectory(prefix="ab_bench-") as criterion_home:
        for r in range(args.rounds):
            for side, binary in (("A", args.a), ("B", args.b)):
                results = run(binary, args.filter, os.path.join(criterion_home, side))
                for name, t in results.items():
                    times[side].setdefault(name, []).append(t)
                base = next((t for name, t in results.items() if args.paired and name.endswith(args.paired)), None)
                if base:
                    for name, t in results.items():
                        paired[side].setdefault(name, []).append(t / base)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print("| benchmark | A median | B median | B/A time | B/A fastest | A runs | B runs |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in sorted(times["A"]):
        a = statistics.median(times["A"][name])
        b = statistics.median(times["B"].get(name, [float("nan")]))
        fastest = min(times["B"].get(name, [float("nan")])) / min(times["A"][name])
        # One unit per row, the one that suits its A median.
        unit, scale = next((u, f) for u, f in (("s", 1), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)) if a >= f or u == "ns")
        runs = {side: " ".join(f"{t / scale:.3g}" for t in times[side].get(name, [])) for side in "AB"}
        print(
            f"| {name} | {a / scale:.3f} {unit} | {b / scale:.3f} {unit} | {b / a:.2f} | {fastest:.2f} "
            f"| {runs['A']} | {runs['B']} |"
        )
    if args.paired:
        print()
        print(f"| benchmark | A: time / {args.paired}, median | B: same | A ratios | B ratios |")
        print("| --- | --- | --- | --- | --- |")
        for name in sorted(paired["A"]):
            ratios = {side: paired[side].get(name, []) for side in "AB"}
            med = {side: statistics.median(r) if r else float("nan") for side, r in ratios.items()}
            listed = {side: " ".join(f"{x:.2f}" for x in r) for side, r in ratios.items()}
            print(f"| {name} | {med['A']:.3f} | {med['B']:.3f} | {listed['A']} | {listed['B']} |")


if __name__ == "__main__":
    main()
