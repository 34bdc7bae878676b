#!/usr/bin/env bash
# Runs the full criterion suite N times (default 5), keeping each run's criterion output and
# log, then writes the README's table and plot from all of them (medians over runs, ratios
# within each run; see scripts/bench_report.py).
#
#     scripts/bench_runs.sh [runs] [out-dir]      # default: 5 runs into target/bench-runs
#
# Leave the machine otherwise idle: each run takes about 8 minutes on 2 cores.
set -euo pipefail
runs=${1:-5}
out=${2:-target/bench-runs}
cd "$(dirname "$0")/.."
cargo bench --bench fanout --no-run
mkdir -p "$out"
dirs=() logs=()
for i in $(seq 1 "$runs"); do
    rm -rf target/criterion
    cargo bench --bench fanout -- --noplot 2>&1 | tee "$out/run$i.log" >/dev/null
    rm -rf "$out/run$i"
    cp -r target/criterion "$out/run$i"
    dirs+=("$out/run$i") logs+=("$out/run$i.log")
    echo "run $i of $runs done: $(date -u +%H:%M:%S)"
done
python3 scripts/bench_report.py "$(IFS=,; echo "${dirs[*]}")" docs "$(IFS=,; echo "${logs[*]}")"
# Record where and when the numbers were taken, under the report's first line.
machine="$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $(rustc --version)"
sed -i "1a\\
\\
Measured $(date -u +%Y-%m-%d) on: $machine (\`scripts/bench_runs.sh $runs\`)." docs/bench-results.md
