"""Operations called while handlers run end without deadlock; stalled handlers are bounded
by the close and stop graces (G7, G8)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conftest import Gate, Recorder, eventually


async def test_unsubscribe_all_from_the_sessions_own_handler(make_pubsub):
    pubsub = make_pubsub(capacity=16)
    calls: list[int] = []

    async def handler(topic: str, message: int) -> None:
        calls.append(message)
        await pubsub.unsubscribe_all("s")

    await pubsub.subscribe_topic("s", "room", handler)
    for n in range(5):
        await pubsub.broadcast("room", n)
    async with asyncio.timeout(5):
        await eventually(lambda: pubsub.stats()["sessions"] == 0)
    await asyncio.sleep(0.01)
    assert calls == [0]


async def test_stop_from_a_handler_does_not_wait_for_itself(make_pubsub):
    pubsub = make_pubsub()
    stopped = asyncio.Event()

    async def handler(topic: str, message: Any) -> None:
        await pubsub.stop()
        stopped.set()

    await pubsub.subscribe_topic("s", "room", handler)
    await pubsub.broadcast("room", 1)
    async with asyncio.timeout(5):
        await stopped.wait()
    await eventually(lambda: not pubsub._pumps)


async def test_stop_cancels_a_stalled_handler_after_the_grace(make_pubsub):
    pubsub = make_pubsub(stop_grace_ms=50)
    stalled, other = Gate(), Recorder()
    await pubsub.subscribe_topic("stalled", "room", stalled)
    await pubsub.subscribe_topic("other", "room", other)
    await pubsub.broadcast("room", 1)
    await eventually(lambda: stalled.calls and other.calls)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(5):
        await pubsub.stop()
    assert 0.04 <= loop.time() - started < 2
    assert not pubsub._pumps
    assert pubsub.stats()["handlers_cancelled"] == 1


@pytest.mark.parametrize("close_grace_ms", [0, 50])
async def test_unsubscribe_all_bounds_a_stalled_handler_by_the_close_grace(make_pubsub, close_grace_ms):
    pubsub = make_pubsub(close_grace_ms=close_grace_ms)
    stalled = Gate()
    await pubsub.subscribe_topic("s", "room", stalled)
    await pubsub.broadcast("room", 1)
    await eventually(lambda: stalled.calls)
    async with asyncio.timeout(1):
        await pubsub.unsubscribe_all("s")
    await eventually(lambda: not pubsub._pumps, timeout=2)
    assert pubsub.stats()["handlers_cancelled"] == 1


async def test_a_handler_that_finishes_within_the_close_grace_is_not_cancelled(make_pubsub):
    pubsub = make_pubsub(close_grace_ms=2000)
    finished = asyncio.Event()

    async def slow(topic: str, message: Any) -> None:
        await asyncio.sleep(0.05)
        finished.set()

    await pubsub.subscribe_topic("s", "room", slow)
    await pubsub.broadcast("room", 1)
    await asyncio.sleep(0.01)
    await pubsub.unsubscribe_all("s")
    async with asyncio.timeout(5):
        await finished.wait()
    await eventually(lambda: not pubsub._pumps)
    assert pubsub.stats()["handlers_cancelled"] == 0


async def test_many_sessions_unsubscribe_while_broadcasts_run(make_pubsub):
    pubsub = make_pubsub(capacity=4)
    handled = 0

    async def handler(topic: str, message: Any) -> None:
        nonlocal handled
        handled += 1
        await asyncio.sleep(0)

    for i in range(50):
        await pubsub.subscribe_topic(f"s{i}", "room", handler)

    async def publish() -> None:
        for n in range(200):
            await pubsub.broadcast("room", n)
            await asyncio.sleep(0)

    async def leave() -> None:
        for i in range(50):
            await pubsub.unsubscribe_all(f"s{i}")
            await asyncio.sleep(0)

    async with asyncio.timeout(10):
        await asyncio.gather(publish(), leave())
        await eventually(lambda: not pubsub._pumps)
    stats = pubsub.stats()
    assert (stats["sessions"], stats["topics"], stats["subscriptions"]) == (0, 0, 0)
    assert handled > 0
    assert stats["recipients"] == stats["delivered"] + sum(stats["dropped"].values())
