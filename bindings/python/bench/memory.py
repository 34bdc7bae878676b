"""Peak RSS behind one stalled handler: pyview_fanout's InMemoryPubSub, PyView's vendored hub
and the design's pure-Python InMemoryPubSub (``peers``), each in a subprocess of its own.

In each subprocess one session subscribes to one topic with a handler that never returns;
the idle process (started, subscribed) gives the baseline; then 20,000 broadcasts of a small
dict each, the publisher yielding to the loop after each; then the peak RSS again
(``ru_maxrss``, which sees Rust's allocations as well as Python's) and the resident set at the
end (``VmRSS``). The idle peak includes the imports' transients, so the current RSS's growth is
printed beside the peak's.
pyview_fanout's mailbox holds ``--capacity`` messages (``drop_oldest``); the hub and the
design spawn one task per delivery, so every broadcast leaves one more task waiting. Runs
alternate between the implementations; the medians are printed.

    python bench/memory.py [--runs 3] [--broadcasts 20000] [--capacity 256]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

from peers import peers


def peak_kib() -> int:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def current_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


async def stalled(name: str, broadcasts: int, capacity: int) -> dict[str, object]:
    peer = peers(capacity)[name]()
    never = asyncio.Event()

    async def handler(topic: str, message: object) -> None:
        await never.wait()

    await peer.start()
    await peer.subscribe_topic("stalled", "room", handler)
    await asyncio.sleep(0.05)
    gc.collect()
    idle_peak, idle_current = peak_kib(), current_kib()
    for i in range(broadcasts):
        await peer.broadcast("room", {"count": i})
        await asyncio.sleep(0)
    await asyncio.sleep(0.2)
    result: dict[str, object] = {
        "idle_peak_kib": idle_peak,
        "peak_kib": peak_kib(),
        "idle_current_kib": idle_current,
        "current_kib": current_kib(),
    }
    stats = getattr(peer, "stats", None)
    if stats is not None:
        snapshot = stats()
        result["dropped"] = snapshot["dropped"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--broadcasts", type=int, default=20_000)
    parser.add_argument("--capacity", type=int, default=256, help="pyview_fanout's mailbox, in messages")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(stalled(args.child, args.broadcasts, args.capacity))), flush=True)
        # The stalled handler never returns: skip the loop's shutdown.
        os._exit(0)

    names = list(peers(args.capacity))
    results: dict[str, list[dict[str, object]]] = {name: [] for name in names}
    for run in range(args.runs):
        for k in range(len(names)):
            name = names[(run + k) % len(names)]
            child = subprocess.run(
                [sys.executable, str(Path(__file__)), "--child", name,
                 "--broadcasts", str(args.broadcasts), "--capacity", str(args.capacity)],
                check=True, capture_output=True, text=True,
            )
            results[name].append(json.loads(child.stdout.strip().splitlines()[-1]))
    print(
        f"{args.broadcasts} broadcasts to one stalled session; pyview_fanout's mailbox "
        f"{args.capacity} messages, drop_oldest; {args.runs} runs"
    )
    print("Medians, MiB: the peak RSS (idle and at the end), and the current RSS's growth over idle.")
    print("| implementation | idle peak | peak | peak's growth | current RSS's growth | per broadcast |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        runs = results[name]
        idle = statistics.median(int(r["idle_peak_kib"]) for r in runs)
        peak = statistics.median(int(r["peak_kib"]) for r in runs)
        peak_growth = statistics.median(int(r["peak_kib"]) - int(r["idle_peak_kib"]) for r in runs)
        growth = statistics.median(int(r["current_kib"]) - int(r["idle_current_kib"]) for r in runs)
        per = growth * 1024 / args.broadcasts
        print(
            f"| {name} | {idle / 1024:.1f} | {peak / 1024:.1f} | {peak_growth / 1024:.2f} "
            f"| {growth / 1024:.2f} | {per:.0f} B |"
        )
    for name in names:
        dropped = [r["dropped"] for r in results[name] if "dropped" in r]
        if dropped:
            print(f"{name} dropped (last run): {dropped[-1]}")


if __name__ == "__main__":
    main()
