#!/usr/bin/env python3
"""A distributed provider (PostgreSQL, NATS or Redis) against its broker's baseline: messages per second
across instances, as the median ratio of alternating runs.

For each topic count (1, 100 and 10,000 by default) it runs `fanout-sizing --provider P` (ours: two
instances, one session per topic on the receiving one, so every topic has a subscriber and every message
crosses) and `fanout-sizing --provider P --baseline-only` (the broker without fanout) alternately, ours
first, each as a process of its own with `--json`, the same workload flags and the same server. It
prints per run the two rates and their ratio, then the median ratio against the target (ours at least 80%
of the baseline) and the median end-to-end p50 and p99 of each side. A single run moves by up to 2x from
one process to the next here: read the medians.

    scripts/broker_ratio.py                       # PostgreSQL: 5 rounds of 3 s runs at 1, 100, 10000 topics
    scripts/broker_ratio.py --provider nats
    scripts/broker_ratio.py --provider redis --latency-at-half
    scripts/broker_ratio.py --rounds 7 --duration 5 --topics 100
    scripts/broker_ratio.py --baseline-only       # the baseline alone
    scripts/broker_ratio.py --rate 20000          # latency below saturation (not for redis)
    scripts/broker_ratio.py -- --publishers 1     # flags after -- go to both sides

The baselines:
- postgres: plain tokio-postgres, pipelined `pg_notify` to channels another connection LISTENs on;
  the server is `--database-url`, else DATABASE_URL, else postgres://postgres@127.0.0.1:5432/test.
- nats: plain async-nats, `Client::publish` on one client, a subscription per subject on another
  (`--nats-baseline protocol`: the protocol written and read directly, a ceiling for any client);
  `--nats-url`, else NATS_URL, else nats://127.0.0.1:4222.
- redis: `redis-benchmark -P 16 -r <topics> publish <prefix>__rand_int__ <message>` while a plain
  connection subscribed to every channel receives each message; `--redis-url`, else REDIS_URL, else
  redis://127.0.0.1:6379. It publishes flat out only, so `--rate` must stay 0, and it measures no
  latency: `--latency-at-half` gives ours.

With `--latency-at-half`, after a topic count's rounds it runs ours `--rounds` more times at half its
median rate (`--rate` of half the median cross-instance messages per second), alternating with the
baseline at the same rate (not for redis, whose baseline publishes flat out only), and prints each
run's achieved rate, p50 and p99, and their medians.

It builds `cargo build -p fanout-sizing --release` first and runs that binary; `--binary PATH` runs a built one instead.
Each run's JSON is kept in `--out` (default target/<provider>-ratio).
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

TARGET = 0.80


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=5, help="runs of each side per topic count (default 5)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of publishing per run (default 3)")
    parser.add_argument(
        "--topics",
        default="1,100,10000",
        help="comma-separated topic counts; a message goes to one of them at random (default 1,100,10000)",
    )
    parser.add_argument("--message-size", type=int, default=64, help="bytes per message (default 64)")
    parser.add_argument(
        "--rate",
        type=int,
        default=0,
        help="messages per second for both sides; 0 (the default) is flat out, where latency is mostly queueing",
    )
    parser.add_argument(
        "--provider", choices=["postgres", "nats", "redis"], default="postgres", help="the broker (default postgres)"
    )
    parser.add_argument("--database-url", help="the server (default: DATABASE_URL, else the tool's default)")
    parser.add_argument("--nats-url", help="the server (default: NATS_URL, else the tool's default)")
    parser.add_argument("--redis-url", help="the server (default: REDIS_URL, else the tool's default)")
    parser.add_argument("--baseline-only", action="store_true", help="run only the baseline")
    parser.add_argument(
        "--nats-baseline",
        choices=["async-nats", "protocol"],
        default="async-nats",
        help="the NATS baseline's client (default async-nats)",
    )
    parser.add_argument(
        "--latency-at-half",
        action="store_true",
        help="then run ours at half its median rate and report its p50 and p99",
    )
    parser.add_argument("--binary", help="a built fanout-sizing to run (default: build one)")
    parser.add_argument("--out", help="where each run's JSON goes (default target/<provider>-ratio)")
    parser.add_argument("extra", nargs="*", help="after --: flags for both sides")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.provider == "redis" and args.rate:
        parser.error("the redis baseline publishes flat out: keep --rate 0 (--latency-at-half measures below it)")
    if args.latency_at_half and (args.rate or args.baseline_only):
        parser.error("--latency-at-half halves ours' flat-out rate: it needs --rate 0 and ours")
    topic_counts = [int(t) for t in args.topics.split(",") if t]

    root = Path(__file__).resolve().parent.parent
    binary = args.binary or build(root)
    out = Path(args.out or f"target/{args.provider}-ratio")
    if not out.is_absolute():
        out = root / out
    out.mkdir(parents=True, exist_ok=True)

    commit = git(root, "rev-parse", "--short", "HEAD")
    if git(root, "status", "--porcelain", "--untracked-files=no"):
        commit += "-dirty"
    print(f"commit {commit}; {' '.join(shlex.quote(a) for a in [sys.argv[0], *sys.argv[1:]])}; {load()}")

    for topics in topic_counts:
        common = [
            "--provider", args.provider,
            "--duration", f"{args.duration:g}",
            "--message-size", str(args.message_size),
            "--topics", str(topics),
            "--json", "--quiet",
        ]
        for flag in ("database_url", "nats_url", "redis_url"):
            if getattr(args, flag):
                common += ["--" + flag.replace("_", "-"), getattr(args, flag)]
        ours_flags = common + ["--sessions", str(topics), "--topics-per-session", "1"] + args.extra
        baseline_flags = common + ["--rate", str(args.rate), "--baseline-only"] + args.extra
        if args.provider == "nats":
            baseline_flags += ["--nats-baseline", args.nats_baseline]
        print(f"\n{topics} topic{'s' if topics != 1 else ''}: {args.rounds} rounds of {args.duration:g} s runs; {load()}")
        if not args.baseline_only:
            print(f"  ours:     {binary} {' '.join(ours_flags + ['--rate', str(args.rate)])}")
        print(f"  baseline: {binary} {' '.join(baseline_flags)}")
        benchmark = args.provider == "redis"
        columns = f"  {'benchmark req/s':>15}" if benchmark else ""
        if args.baseline_only:
            print(f"  {'round':>5}  {'baseline msg/s':>14}  {'p50 us':>8}  {'p99 us':>8}{columns}")
        else:
            print(f"  {'round':>5}  {'ours msg/s':>10}  {'baseline msg/s':>14}  {'ratio':>6}{columns}")
        ours, baseline, ratios = [], [], []
        for round_ in range(1, args.rounds + 1):
            lost = ""
            if not args.baseline_only:
                report = run(binary, ours_flags + ["--rate", str(args.rate)], out / f"t{topics}-r{round_}-ours.json")
                ours.append(ours_figures(report, args.provider))
                lost = losses(report[args.provider])
            report = run(binary, baseline_flags, out / f"t{topics}-r{round_}-baseline.json")
            baseline.append(baseline_figures(report))
            extra = ""
            if benchmark:
                extra = f"  {report['benchmark']['requests_per_second']:>15.0f}"
            extra += lost
            if report.get("missing"):
                extra += f"  ({report['missing']} of {report['sent']} messages missing)"
            if args.baseline_only:
                rate, p50, p99 = baseline[-1]
                print(f"  {round_:>5}  {rate:>14.0f}  {micros(p50):>8}  {micros(p99):>8}{extra}")
            else:
                ratios.append(ours[-1][0] / baseline[-1][0] if baseline[-1][0] else 0.0)
                print(f"  {round_:>5}  {ours[-1][0]:>10.0f}  {baseline[-1][0]:>14.0f}  {ratios[-1]:>6.2f}{extra}")
        if ratios:
            median = statistics.median(ratios)
            verdict = "met" if median >= TARGET else "not met"
            print(f"  median ratio {median:.2f} (target {TARGET:.2f}: {verdict})")
            summary("ours", ours)
        summary("baseline", baseline)
        if args.latency_at_half:
            half = int(statistics.median(rate for rate, _, _ in ours) / 2)
            latency_at(binary, ours_flags, baseline_flags, half, args, out / f"t{topics}-half")


def latency_at(binary, ours_flags, baseline_flags, rate, args, keep):
    """Runs ours `--rounds` times at `rate` and prints each run's achieved rate, p50 and p99; and,
    alternately, the baseline at the same rate where it takes one (not redis-benchmark)."""
    paced_baseline = args.provider != "redis"
    print(f"  at half ours' median rate, --rate {rate}{' (ours, then the baseline)' if paced_baseline else ''}:")
    print(f"  {'round':>5}  {'ours msg/s':>10}  {'p50 us':>8}  {'p99 us':>8}", end="")
    print(f"  {'baseline msg/s':>14}  {'p50 us':>8}  {'p99 us':>8}" if paced_baseline else "")
    figures, baselines = [], []
    for round_ in range(1, args.rounds + 1):
        report = run(binary, ours_flags + ["--rate", str(rate)], Path(f"{keep}-r{round_}-ours.json"))
        figures.append(ours_figures(report, args.provider))
        achieved, p50, p99 = figures[-1]
        line = f"  {round_:>5}  {achieved:>10.0f}  {p50:>8}  {p99:>8}"
        lost = losses(report[args.provider])
        if paced_baseline:
            flags = list(baseline_flags)
            flags[flags.index("--rate") + 1] = str(rate)
            report = run(binary, flags, Path(f"{keep}-r{round_}-baseline.json"))
            baselines.append(baseline_figures(report))
            achieved, p50, p99 = baselines[-1]
            line += f"  {achieved:>14.0f}  {micros(p50):>8}  {micros(p99):>8}"
        print(line + lost)
    summary("ours", figures)
    if baselines:
        summary("baseline", baselines)


def summary(side, figures):
    rates, p50s, p99s = zip(*figures)
    latency = ""
    if None not in p50s:
        latency = f", end-to-end p50 {statistics.median(p50s):.0f} us, p99 {statistics.median(p99s):.0f} us"
    print(f"  {side + ':':<9} median {statistics.median(rates):.0f} msg/s{latency}")


def micros(value):
    return "-" if value is None else value


def ours_figures(report, provider):
    section = report.get(provider)
    if section is None:
        sys.exit(f"fanout-sizing reported no {provider} section: is it the {provider} provider's run?")
    latency = report["end_to_end_latency_us"]
    return section["cross_instance_messages_per_second"], latency["p50"], latency["p99"]


def losses(section):
    """A note of what our run lost in the broker, if anything."""
    lost = section.get("lost_in_broker", 0)
    if not lost:
        return ""
    return (
        f"  (ours: {lost} messages lost in the broker, {section['outages']} outages, "
        f"{section['slow_consumer_outages']} of a slow consumer)"
    )


def baseline_figures(report):
    """The rate and, where the baseline measures it (not redis-benchmark), its p50 and p99."""
    latency = report.get("latency_us") or {}
    return report["messages_per_second"], latency.get("p50"), latency.get("p99")


def run(binary, flags, keep):
    result = subprocess.run([binary, *flags], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{binary} {' '.join(flags)} failed ({result.returncode}):\n{result.stderr.strip()}")
    keep.write_text(result.stdout)
    return json.loads(result.stdout)


def load():
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} cores"


def build(root):
    command = ["cargo", "build", "-p", "fanout-sizing", "--release", "--message-format", "json-render-diagnostics"]
    result = subprocess.run(command, cwd=root, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed")
    for line in result.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "fanout-sizing":
            if message.get("executable"):
                return message["executable"]
    sys.exit(f"{' '.join(command)} built no fanout-sizing binary")


def git(root, *args):
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
