"""Operations called while handlers run end without deadlock; stalled handlers are bounded
by the close and stop graces (G7, G8)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from conftest import Gate, Recorder, eventually, settled
from pyview_fanout import InMemoryPubSub


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
    await eventually(lambda: not pubsub._live())


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
    assert not pubsub._live()
    assert pubsub.stats()["handlers_cancelled"] == 1


@pytest.mark.parametrize("first_step_s", [0, 0.3])
async def test_stop_cancels_a_stalled_handler_on_another_threads_loop(make_pubsub, first_step_s):
    # G8: stop ends the handlers of every loop, not only the caller's; also one still in its
    # first step (synchronous work, the GIL released) when stop begins
    pubsub = make_pubsub(stop_grace_ms=50)
    ready = threading.Event()
    other_loop = asyncio.new_event_loop()
    never = asyncio.Event()
    entered = threading.Event()
    handler_tasks: list[asyncio.Task[None]] = []

    async def stall(topic: str, message: object) -> None:
        entered.set()
        time.sleep(first_step_s)
        handler_tasks.append(asyncio.current_task())
        await never.wait()

    async def subscribe_there() -> None:
        await pubsub.subscribe_topic("elsewhere", "room", stall)

    def run_other_loop() -> None:
        asyncio.set_event_loop(other_loop)
        other_loop.run_until_complete(subscribe_there())
        ready.set()
        other_loop.run_forever()

    thread = threading.Thread(target=run_other_loop, daemon=True)
    thread.start()
    try:
        assert await asyncio.to_thread(ready.wait, 5)
        await pubsub.broadcast("room", 1)
        assert await asyncio.to_thread(entered.wait, 5)
        async with asyncio.timeout(5):
            await pubsub.stop()
        assert len(handler_tasks) == 1 and handler_tasks[0].done()
        assert pubsub.stats()["handlers_cancelled"] == 1
    finally:
        other_loop.call_soon_threadsafe(other_loop.stop)
        thread.join(5)
        other_loop.close()


@pytest.mark.parametrize("close_grace_ms", [0, 50])
async def test_unsubscribe_all_bounds_a_stalled_handler_by_the_close_grace(make_pubsub, close_grace_ms):
    pubsub = make_pubsub(close_grace_ms=close_grace_ms)
    stalled = Gate()
    await pubsub.subscribe_topic("s", "room", stalled)
    await pubsub.broadcast("room", 1)
    await eventually(lambda: stalled.calls)
    async with asyncio.timeout(1):
        await pubsub.unsubscribe_all("s")
    await eventually(lambda: not pubsub._live(), timeout=2)
    assert pubsub.stats()["handlers_cancelled"] == 1


async def test_a_slow_consumer_disconnect_bounds_its_stalled_handler_by_the_close_grace(make_pubsub):
    # G7: the engine closes the session itself (policy disconnect); its handler never returns
    pubsub = make_pubsub(capacity=1, policy="disconnect", close_grace_ms=50)
    stalled, other = Gate(), Recorder()
    await pubsub.subscribe_topic("slow", "room", stalled)
    await pubsub.subscribe_topic("other", "room", other)
    await pubsub.broadcast("room", 0)
    await eventually(lambda: stalled.calls)
    for n in range(1, 4):
        await pubsub.broadcast("room", n)
        # The other session keeps up; the stalled one overflows at the second.
        await eventually(lambda: other.messages[-1] == n)
    assert pubsub.stats()["disconnects"] == 1
    loop = asyncio.get_running_loop()
    disconnected = loop.time()
    await eventually(lambda: pubsub.stats()["handlers_cancelled"] == 1, timeout=2)
    # The grace, plus at most the watcher's interval (half the grace here).
    assert 0.04 <= loop.time() - disconnected < 1
    await eventually(lambda: pubsub._live() == 1)
    assert other.messages == [0, 1, 2, 3]


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
    await settled(pubsub, finished, handlers_cancelled=0)


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
        await eventually(lambda: not pubsub._live())
    stats = pubsub.stats()
    assert (stats["sessions"], stats["topics"], stats["subscriptions"]) == (0, 0, 0)
    assert handled > 0
    assert stats["recipients"] == stats["delivered"] + sum(stats["dropped"].values())


async def test_stop_from_a_handler_outlasts_the_close_grace(make_pubsub):
    # The handler running stop() is bounded by the stop grace, not by the close grace the
    # stop's own close of its session would arm.
    pubsub = make_pubsub(close_grace_ms=50, stop_grace_ms=300)
    outcome: list[str] = []

    async def stalled(topic: str, message: Any) -> None:
        await asyncio.sleep(3600)

    async def admin(topic: str, message: Any) -> None:
        await pubsub.stop()
        outcome.append("stopped")

    await pubsub.subscribe_topic("worker", "jobs", stalled)
    await pubsub.broadcast("jobs", 1)
    await pubsub.subscribe_topic("admin", "control", admin)
    await pubsub.broadcast("control", "shutdown")
    await eventually(lambda: outcome == ["stopped"], timeout=3)
    assert pubsub.stats()["handlers_cancelled"] == 1
    assert not pubsub._pumps
    await eventually(lambda: not [task for task in asyncio.all_tasks() if task.get_name().startswith("pyview_fanout")])


def test_a_session_id_reused_after_its_loop_closed_with_tasks_pending(make_pubsub):
    # Not asyncio.run: the first loop is closed with its pump still parked.
    pubsub = InMemoryPubSub()
    got: list[tuple[str, Any]] = []

    async def first(topic: str, message: Any) -> None:
        got.append(("first", message))

    async def second(topic: str, message: Any) -> None:
        got.append(("second", message))

    async def before() -> None:
        await pubsub.subscribe_topic("s", "room", first)
        await pubsub.broadcast("room", 1)
        await eventually(lambda: got == [("first", 1)])

    async def after() -> None:
        await pubsub.subscribe_topic("s", "room", second)
        await pubsub.broadcast("room", 2)
        await eventually(lambda: got == [("first", 1), ("second", 2)])
        await pubsub.stop()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(before())
    loop.close()
    asyncio.run(after())
