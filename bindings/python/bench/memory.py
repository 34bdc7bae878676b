"""Peak RSS behind one stalled handler: pyview_fanout's InMemoryPubSub, PyView's vendored hub
and the design's pure-Python InMemoryPubSub (``peers``), each in a subprocess of its own.

In each subprocess one session subscribes to one topic with a handler that never returns;
the peak RSS of the idle process (started, subscribed) is the baseline; then 20,000
broadcasts of a small dict each, the publisher yielding to the loop after each; then the
peak RSS again (``ru_maxrss``, which sees Rust's allocations as well as Python's).
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


async def stalled(name: str, broadcasts: int, capacity: int) -> dict[str, object]:
    peer = peers(capacity)[name]()
    never = asyncio.Event()

    async def handler(topic: str, message: object) -> None:
        await never.wait()

    await peer.start()
    await peer.subscribe_topic("stalled", "room", handler)
    await asyncio.sleep(0.05)
    gc.collect()
    baseline = peak_kib()
    for i in range(broadcasts):
        await peer.broadcast("room", {"count": i})
        await asyncio.sleep(0)
    await asyncio.sleep(0.2)
    result: dict[str, object] = {"baseline_kib": baseline, "peak_kib": peak_kib()}
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
    print("| implementation | peak RSS MiB (median) | growth over idle MiB (median) | growth per broadcast |")
    print("| --- | ---: | ---: | ---: |")
    for name in names:
        peaks = [int(r["peak_kib"]) for r in results[name]]
        growth = [int(r["peak_kib"]) - int(r["baseline_kib"]) for r in results[name]]
        per = statistics.median(growth) * 1024 / args.broadcasts
        print(f"| {name} | {statistics.median(peaks) / 1024:.1f} | {statistics.median(growth) / 1024:.1f} | {per:.0f} B |")
    for name in names:
        dropped = [r["dropped"] for r in results[name] if "dropped" in r]
        if dropped:
            print(f"{name} dropped (last run): {dropped[-1]}")


if __name__ == "__main__":
    main()
