"""Deliveries per second: pyview_fanout's InMemoryPubSub against PyView's vendored hub.

One topic to 1,000 sessions, each with the same counting async handler; the publisher
broadcasts and yields to the loop after each broadcast, as an event handler does. Runs
alternate between the implementations; the median of each is printed. The hub is
``pyview.vendor.flet.pubsub.PubSubHub`` from ``pyview-web`` (``pip install pyview-web==0.9.0``),
left out when it is not installed.

    python bench/deliveries.py [--sessions 1000] [--broadcasts 200] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from pyview_fanout import InMemoryPubSub

Run = Callable[[int, int], Awaitable[float]]


async def measure(
    subscribe: Callable[[str, str, Callable[[str, object], Awaitable[None]]], Awaitable[None]],
    broadcast: Callable[[str, object], Awaitable[None]],
    sessions: int,
    broadcasts: int,
) -> float:
    """Deliveries per second: every session subscribed with a counting handler, then
    ``broadcasts`` messages, the publisher yielding after each, until the last is handled."""
    expected = sessions * broadcasts
    received = 0
    done = asyncio.Event()

    async def handler(topic: str, message: object) -> None:
        nonlocal received
        received += 1
        if received == expected:
            done.set()

    for i in range(sessions):
        await subscribe(f"s{i}", "room", handler)
    start = time.perf_counter()
    for i in range(broadcasts):
        await broadcast("room", i)
        await asyncio.sleep(0)
    await done.wait()
    return expected / (time.perf_counter() - start)


async def run_fanout(sessions: int, broadcasts: int) -> float:
    pubsub = InMemoryPubSub(capacity=256)
    await pubsub.start()
    rate = await measure(pubsub.subscribe_topic, pubsub.broadcast, sessions, broadcasts)
    await pubsub.stop()
    return rate


async def run_hub(sessions: int, broadcasts: int) -> float:
    from pyview.vendor.flet.pubsub import PubSubHub

    hub = PubSubHub()
    return await measure(hub.subscribe_topic_async, hub.send_all_on_topic_async, sessions, broadcasts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--broadcasts", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    runs: dict[str, Run] = {"pyview_fanout": run_fanout}
    try:
        import pyview.vendor.flet.pubsub  # noqa: F401

        runs["pyview hub"] = run_hub
    except ImportError:
        print("pyview-web is not installed: the hub is left out")
    results: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.runs):
        for name, run in runs.items():
            results[name].append(asyncio.run(run(args.sessions, args.broadcasts)))
    for name, rates in results.items():
        print(f"{name}: {statistics.median(rates) / 1000:.0f} k deliveries/s (runs: {', '.join(f'{r / 1000:.0f}' for r in rates)})")


if __name__ == "__main__":
    main()
