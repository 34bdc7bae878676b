"""Deliveries per second: pyview_fanout's InMemoryPubSub, PyView's vendored hub and the design's
pure-Python InMemoryPubSub (``peers``), in one process.

Two scenarios, each session subscribed with the same counting async handler:

- ``one-topic``: one topic to 1,000 sessions, 200 broadcasts;
- ``5-of-1000``: 10,000 sessions, each on 5 of 1,000 topics (a seeded draw, the same for every
  implementation), 2,000 broadcasts going round the topics.

The publisher broadcasts and yields to the loop after each broadcast, as an event handler
does; the clock runs from the first broadcast to the last delivery. Each run measures every
implementation once, on a fresh event loop, the order rotating from run to run. Printed: the
median deliveries per second of each, and the median over runs of its ratio to the hub's rate
in the same run.

    python bench/deliveries.py [--runs 5] [--scale 1.0]

``--scale`` multiplies the broadcast counts (not the sessions).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

from peers import HUB, Peer, peers

# Messages queued per session's mailbox in pyview_fanout; every scenario stays under it, so no
# policy drops a delivery.
CAPACITY = 256
# A run that has not seen every delivery by then has lost some.
TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Scenario:
    name: str
    sessions: int
    topics: int
    topics_per_session: int
    broadcasts: int

    def subscriptions(self) -> list[list[str]]:
        """Each session's topics: the same seeded draw for every implementation."""
        draw = random.Random(25)
        return [
            [f"topic:{t}" for t in draw.sample(range(self.topics), self.topics_per_session)]
            for _ in range(self.sessions)
        ]

    def published(self) -> list[str]:
        return [f"topic:{i % self.topics}" for i in range(self.broadcasts)]


async def measure(peer: Peer, scenario: Scenario) -> float:
    subscriptions = scenario.subscriptions()
    published = scenario.published()
    subscribers: dict[str, int] = {}
    for topics in subscriptions:
        for topic in topics:
            subscribers[topic] = subscribers.get(topic, 0) + 1
    expected = sum(subscribers.get(topic, 0) for topic in published)
    per_session = max(sum(published.count(t) for t in topics) for topics in subscriptions[:100])
    assert per_session <= CAPACITY, f"{scenario.name}: {per_session} messages per session"
    received = 0
    done = asyncio.Event()

    async def handler(topic: str, message: object) -> None:
        nonlocal received
        received += 1
        if received == expected:
            done.set()

    await peer.start()
    for i, topics in enumerate(subscriptions):
        for topic in topics:
            await peer.subscribe_topic(f"s{i}", topic, handler)
    gc.collect()
    start = time.perf_counter()
    for i, topic in enumerate(published):
        await peer.broadcast(topic, i)
        await asyncio.sleep(0)
    try:
        await asyncio.wait_for(done.wait(), TIMEOUT_S)
    except TimeoutError:
        raise SystemExit(f"{scenario.name}: {received} of {expected} deliveries after {TIMEOUT_S} s") from None
    rate = expected / (time.perf_counter() - start)
    await peer.stop()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the broadcast counts")
    args = parser.parse_args()
    scenarios = [
        Scenario("one-topic", sessions=1000, topics=1, topics_per_session=1, broadcasts=round(200 * args.scale)),
        Scenario("5-of-1000", sessions=10_000, topics=1000, topics_per_session=5, broadcasts=round(2000 * args.scale)),
    ]
    factories: dict[str, Callable[[], Peer]] = peers(CAPACITY)
    names = list(factories)
    print(
        f"python {platform.python_version()}, pyview-fanout {metadata.version('pyview-fanout')}, "
        f"pyview-web {_version('pyview-web')}, {os.cpu_count()} cpus, {args.runs} runs"
    )
    for scenario in scenarios:
        rates: dict[str, list[float]] = {name: [] for name in names}
        for run in range(args.runs):
            for k in range(len(names)):
                name = names[(run + k) % len(names)]
                rates[name].append(asyncio.run(measure(factories[name](), scenario)))
                gc.collect()
        print(
            f"\n{scenario.name}: {scenario.sessions} sessions, {scenario.topics} topics, "
            f"{scenario.topics_per_session} per session, {scenario.broadcasts} broadcasts"
        )
        print("| implementation | k deliveries/s (median) | × hub (median) | runs (k/s) |")
        print("| --- | ---: | ---: | --- |")
        for name in names:
            ratio = (
                f"{statistics.median(r / h for r, h in zip(rates[name], rates[HUB])):.2f}"
                if HUB in rates
                else "-"
            )
            runs = ", ".join(f"{r / 1000:.0f}" for r in rates[name])
            print(f"| {name} | {statistics.median(rates[name]) / 1000:.0f} | {ratio} | {runs} |")
        sys.stdout.flush()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
