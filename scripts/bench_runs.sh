#!/usr/bin/env bash
# Runs the criterion suite (`cargo bench --bench fanout`) a number of times and writes what it
# measured: the Results block of benches/README.md, the plot benches/results.svg, and the
# performance table of README.md where README.md has its markers (scripts/bench_report.py).
# Times are medians over the runs; each ratio is taken within a run, then its median over runs.
#
#     scripts/bench_runs.sh [runs] [out-dir] [-- criterion arguments]
#
#     runs      how many times to run the suite (default 1)
#     out-dir   each run's criterion output and log (default target/bench-runs)
#     -- ...    passed to the bench binary, e.g. a filter: -- '^(churn|liveview)/'
#
# Leave the machine otherwise idle while it runs. With FANOUT_BENCH_QUICK=1 every group warms
# up and measures for a fraction of its time: a check of this pipeline, whose figures are not
# measurements (the command recorded beside them says so).
#
# The provenance recorded beside the figures: the CPU model and core count, `rustc --version`,
# the commit, marked `-dirty` when tracked files differ from it (the files this script writes
# do not count), the UTC date of the start, and the command.
set -euo pipefail
runs=1
out=target/bench-runs
if [[ $# -gt 0 && $1 != -- ]]; then runs=$1; shift; fi
if [[ $# -gt 0 && $1 != -- ]]; then out=$1; shift; fi
if [[ $# -gt 0 && $1 == -- ]]; then shift; fi
if ! [[ $runs =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/bench_runs.sh [runs] [out-dir] [-- criterion arguments]" >&2
    exit 2
fi
# The command, as it would be typed at the repository's root.
quote() {
    if [[ $1 =~ ^[A-Za-z0-9_./:=-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
command="scripts/bench_runs.sh $runs"
[[ $out != target/bench-runs ]] && command+=" $(quote "$out")"
[[ $# -gt 0 ]] && command+=" --" && for arg in "$@"; do command+=" $(quote "$arg")"; done
[[ -n ${FANOUT_BENCH_QUICK:-} ]] && command="FANOUT_BENCH_QUICK=$(quote "$FANOUT_BENCH_QUICK") $command"

cd "$(dirname "$0")/.."
commit=$(git rev-parse --short HEAD)
if [[ -n $(git status --porcelain --untracked-files=no -- . \
    ':(exclude)README.md' ':(exclude)benches/README.md' ':(exclude)benches/results.svg') ]]; then
    commit+="-dirty"
fi
date=$(date -u +%Y-%m-%d)
machine="$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
rustc=$(rustc --version)

cargo bench --bench fanout --no-run
mkdir -p "$out"
out=$(cd "$out" && pwd)
dirs=() logs=()
for i in $(seq 1 "$runs"); do
    rm -rf "$out/run$i"
    CRITERION_HOME="$out/run$i" cargo bench --bench fanout -- --noplot "$@" >"$out/run$i.log" 2>&1 || {
        echo "run $i failed; its log: $out/run$i.log" >&2
        exit 1
    }
    dirs+=("$out/run$i") logs+=("$out/run$i.log")
    echo "run $i of $runs done: $(date -u +%H:%M:%S)"
done
python3 scripts/bench_report.py \
    --criterion "${dirs[@]}" --log "${logs[@]}" \
    --machine "$machine" --rustc "$rustc" --commit "$commit" --date "$date" --command "$command"
