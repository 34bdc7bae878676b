#!/usr/bin/env python3
"""A/B comparison of two builds of the criterion bench binary on a noisy host.

Runs the two binaries alternately (A, B, A, B, ...) on the same filter, so slow drifts of the
host (other tenants, thermal state) hit both sides alike, and reports per benchmark the median
of each side's per-run medians and the ratio B/A.

    cargo bench --bench fanout --no-run            # build A, then copy the binary away
    cp target/release/deps/fanout-<hash> /tmp/A     # (the newest non-.d file)
    # change the code, build again, copy to /tmp/B
    scripts/ab_bench.py /tmp/A /tmp/B 'end_to_end/fanout/' --rounds 5

The times compared are criterion's point estimates (the middle of `time: [lo mid hi]`).

Use five rounds or more for a change expected below 2x: on the 2-vCPU hosts this project runs
on, one binary's time for a scenario moves by 1.5-2x between processes (a fast and a slow mode),
and three rounds once showed 0.55 for a change that seven rounds measured at 1.75
(`docs/design-topic-log.md`, session 9). Read the per-round columns, not only the medians.
"B/A fastest" compares each side's fastest run: on such a host, where the slow mode comes and
goes between processes, the fastest run is the steadier figure for a change's own cost. The
slow mode is the host placing the two vCPUs far apart: each run also measures a cache line's
round trip between the cores (`machine/core_to_core_round_trip`, about 90 ns near and 340 ns
far on session 9's EPYC), listed per round beside the times, so rounds can be compared at the
same placement.

With `--paired ID` it also reports, per benchmark, the median over runs of its time divided by
the time of benchmark ID *in the same run* (e.g. each slow-consumer policy against the
`none_stalled` baseline): ratios within one process, which this host's run-to-run noise
disturbs far less than times across processes. Pass the same binary as A and B to just repeat.
"""
import argparse
import re
import statistics
import subprocess
import sys

UNITS = {"ps": 1e-12, "ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
LINE = re.compile(r"^(\S+)\s*time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", re.M)


def run(binary, bench_filter, seconds):
    # Every run also measures the machine's core-to-core round trip (the `machine` group), so
    # each round's placement of the vCPUs shows beside its times.
    out = subprocess.run(
        [binary, "--bench", f"({bench_filter})|^machine/", "--noplot", "--measurement-time", str(seconds)],
        capture_output=True, text=True, check=True,
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
    parser.add_argument("--seconds", type=int, default=3, help="criterion measurement time per benchmark")
    parser.add_argument("--paired", metavar="ID", help="also report times relative to benchmark ID, run by run")
    args = parser.parse_args()
    times = {"A": {}, "B": {}}
    paired = {"A": {}, "B": {}}
    for r in range(args.rounds):
        for side, binary in (("A", args.a), ("B", args.b)):
            results = run(binary, args.filter, args.seconds)
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
