"""How the pump runs handlers: in one task from start to end, whatever they return."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import sys
import types
import weakref
from collections.abc import Generator
from typing import Any

import pytest

from conftest import Recorder, eventually, settled
from pyview_fanout import InMemoryPubSub, StoppedError


async def test_a_handler_that_awaits_keeps_its_task_and_its_timeout(make_pubsub):
    # asyncio.timeout binds to the task that enters it: the handler's, before and after it awaits.
    pubsub = make_pubsub()
    tasks: list[tuple[asyncio.Task[Any] | None, asyncio.Task[Any] | None]] = []
    timed_out: list[Any] = []
    other = Recorder()

    async def handler(topic: str, message: Any) -> None:
        before = asyncio.current_task()
        try:
            async with asyncio.timeout(0.05):
                await asyncio.Event().wait()
        except TimeoutError:
            timed_out.append(message)
        tasks.append((before, asyncio.current_task()))

    await pubsub.subscribe_topic("waits", "room", handler)
    await pubsub.subscribe_topic("other", "room", other)
    for n in range(3):
        await pubsub.broadcast("room", n)
    await eventually(lambda: len(timed_out) == 3)
    assert timed_out == [0, 1, 2]
    assert all(before is after and before is not None for before, after in tasks)
    # The other session was not held up by the timeouts (G5).
    assert other.messages == [0, 1, 2]
    assert pubsub.stats()["handler_errors"] == 0


async def test_handlers_that_return_at_once_run_without_a_task_of_their_own(make_pubsub):
    pubsub = make_pubsub()
    seen: list[asyncio.Task[Any] | None] = []

    async def handler(topic: str, message: Any) -> None:
        seen.append(asyncio.current_task())

    for i in range(20):
        await pubsub.subscribe_topic(f"s{i}", "room", handler)
    await pubsub.broadcast("room", 1)
    await eventually(lambda: len(seen) == 20)
    # Every one ran inside the loop's pump: one task, and not the publisher's.
    assert len({id(task) for task in seen}) == 1
    assert seen[0] is not asyncio.current_task()


class _Awaitable:
    """An awaitable that is not a coroutine: ``__await__`` returns a generator."""

    def __init__(self, log: list[Any], message: Any, suspend: bool) -> None:
        self.log, self.message, self.suspend = log, message, suspend

    def __await__(self) -> Generator[Any, None, None]:
        if self.suspend:
            yield None
        self.log.append(self.message)


@pytest.mark.parametrize("suspend", [False, True])
async def test_any_awaitable_a_handler_returns_is_awaited(make_pubsub, suspend):
    pubsub = make_pubsub()
    log: list[Any] = []
    await pubsub.subscribe_topic("s", "room", lambda topic, message: _Awaitable(log, message, suspend))
    for n in range(3):
        await pubsub.broadcast("room", n)
    await eventually(lambda: log == [0, 1, 2])
    assert pubsub.stats()["handler_errors"] == 0


async def test_a_handler_that_returns_no_awaitable_is_an_error_and_the_session_goes_on(make_pubsub, caplog):
    pubsub = make_pubsub()
    calls: list[Any] = []

    def not_async(topic: str, message: Any) -> None:
        calls.append(message)

    class BadAwait:
        def __await__(self) -> int:
            return 1

    await pubsub.subscribe_topic("plain", "room", not_async)
    await pubsub.subscribe_topic("bad", "room", lambda topic, message: BadAwait())
    with caplog.at_level(logging.ERROR, logger="pyview_fanout"):
        await pubsub.broadcast("room", 1)
        await pubsub.broadcast("room", 2)
        await eventually(lambda: pubsub.stats()["handler_errors"] == 4)
    assert calls == [1, 2]
    messages = [record.getMessage() for record in caplog.records]
    assert sum("session 'plain'" in message for message in messages) == 2
    raised = [str(record.exc_info[1]) for record in caplog.records if record.exc_info]
    assert any("can't be used in 'await' expression" in message for message in raised)
    assert any("non-iterator" in message for message in raised)


async def test_handlers_that_raise_before_or_after_awaiting_are_counted(make_pubsub, caplog):
    pubsub = make_pubsub()
    handled: list[Any] = []

    async def handler(topic: str, message: Any) -> None:
        if message == "late":
            await asyncio.sleep(0)
        if message in ("early", "late"):
            raise ValueError(message)
        handled.append(message)

    await pubsub.subscribe_topic("s", "room", handler)
    with caplog.at_level(logging.ERROR, logger="pyview_fanout"):
        for message in ("early", 1, "late", 2):
            await pubsub.broadcast("room", message)
        await eventually(lambda: handled == [1, 2])
    assert pubsub.stats()["handler_errors"] == 2
    raised = [str(record.exc_info[1]) for record in caplog.records if record.exc_info]
    assert raised == ["early", "late"]


async def test_a_session_with_many_topics_finds_each_handler(make_pubsub):
    # Past 16 topics a session's handlers are kept in a hash map.
    pubsub = make_pubsub()
    recorders = {f"t{i}": Recorder() for i in range(40)}
    for topic, recorder in recorders.items():
        await pubsub.subscribe_topic("s", topic, recorder)
    await pubsub.unsubscribe_topic("s", "t7")
    for topic in recorders:
        await pubsub.broadcast(topic, topic)
    await eventually(lambda: all(r.calls for t, r in recorders.items() if t != "t7"))
    await asyncio.sleep(0.01)
    assert all(recorder.calls == [(topic, topic)] for topic, recorder in recorders.items() if topic != "t7")
    assert recorders["t7"].calls == []
    assert pubsub.stats()["subscriptions"] == 39


async def test_a_long_backlog_does_not_hold_up_other_sessions(make_pubsub):
    # G5: the pump takes a bounded number of one session's messages before the next's turn.
    pubsub = make_pubsub(capacity=4096)
    order: list[str] = []

    async def busy(topic: str, message: Any) -> None:
        order.append("busy")

    async def quiet(topic: str, message: Any) -> None:
        order.append("quiet")

    await pubsub.subscribe_topic("busy", "flood", busy)
    await pubsub.subscribe_topic("quiet", "ping", quiet)
    for n in range(2000):
        await pubsub.broadcast("flood", n)
    await pubsub.broadcast("ping", 0)
    await eventually(lambda: "quiet" in order and len(order) == 2001)
    assert order.index("quiet") < 200


async def test_a_pump_task_cancelled_by_hand_goes_on_in_a_new_one(make_pubsub):
    # A handler that returns at once sees the pump's task as its own; cancelling it later
    # (as an app might cancel "its" task on a disconnect) costs no session anything.
    pubsub = make_pubsub()
    first, second = Recorder(), Recorder()
    seen: list[asyncio.Task[Any] | None] = []

    async def remember(topic: str, message: Any) -> None:
        seen.append(asyncio.current_task())

    await pubsub.subscribe_topic("a", "room", remember)
    await pubsub.subscribe_topic("b", "room", first)
    await pubsub.broadcast("room", 1)
    await eventually(lambda: seen and first.messages == [1])
    assert seen[0] is not None
    seen[0].cancel()
    await eventually(lambda: seen[0].done())
    await pubsub.subscribe_topic("c", "room", second)
    await pubsub.broadcast("room", 2)
    await eventually(lambda: first.messages == [1, 2] and second.messages == [2])
    assert pubsub.stats()["sessions"] == 3


async def test_a_handler_that_ends_its_session_in_its_first_step_is_bounded_by_the_grace(make_pubsub):
    # G7: the close grace starts when the handler is handed to a task of its own.
    pubsub = make_pubsub(close_grace_ms=50)
    cancelled = asyncio.Event()

    async def handler(topic: str, message: Any) -> None:
        await pubsub.unsubscribe_all("s")  # done at once, inside the pump
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await pubsub.subscribe_topic("s", "room", handler)
    await pubsub.broadcast("room", 1)
    await settled(pubsub, cancelled, handlers_cancelled=1)


def test_a_session_id_reused_on_a_new_loop_receives_there(make_pubsub):
    # The first loop's pump ended with its loop; its sessions are closed, not left deaf.
    pubsub = InMemoryPubSub()
    received: list[Any] = []

    async def handler(topic: str, message: Any) -> None:
        received.append(message)

    async def first() -> None:
        await pubsub.subscribe_topic("s", "room", handler)
        await pubsub.broadcast("room", "first")
        await eventually(lambda: received == ["first"])

    async def second() -> None:
        assert pubsub.stats()["sessions"] == 0
        await pubsub.subscribe_topic("s", "room", handler)
        await pubsub.broadcast("room", "second")
        await eventually(lambda: received == ["first", "second"])
        await pubsub.stop()

    asyncio.run(first())
    asyncio.run(second())


async def test_a_handler_raising_a_base_exception_is_counted_and_others_go_on(make_pubsub):
    class Abort(BaseException):
        pass

    pubsub = make_pubsub()
    good = Recorder()

    async def bad(topic: str, message: Any) -> None:
        raise Abort

    await pubsub.subscribe_topic("bad", "room", bad)
    await pubsub.subscribe_topic("good", "room", good)
    for n in range(3):
        await pubsub.broadcast("room", n)
    await eventually(lambda: good.messages == [0, 1, 2])
    assert pubsub.stats()["handler_errors"] == 3


async def test_each_session_runs_in_its_own_context(make_pubsub):
    # As in a task made by its first subscribe: that context's values, and its own changes.
    pubsub = make_pubsub()
    user: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="-")
    counter: contextvars.ContextVar[int] = contextvars.ContextVar("counter", default=0)
    seen: list[tuple[str, str, int]] = []

    async def handler(topic: str, message: Any) -> None:
        if message == "wait":
            await asyncio.sleep(0)
        counter.set(counter.get() + 1)
        seen.append((topic, user.get(), counter.get()))

    async def subscribe(name: str) -> None:
        user.set(name)
        await pubsub.subscribe_topic(name, name, handler)

    await asyncio.gather(subscribe("alice"), subscribe("bob"))
    for message in ("now", "wait", "now"):
        await pubsub.broadcast("alice", message)
        await pubsub.broadcast("bob", message)
    await eventually(lambda: len(seen) == 6)
    assert sorted(seen) == [("alice", "alice", n) for n in (1, 2, 3)] + [("bob", "bob", n) for n in (1, 2, 3)]
    assert user.get() == "-" and counter.get() == 0


async def test_a_resumed_handler_sees_no_exception_of_the_pump(make_pubsub):
    pubsub = make_pubsub()
    seen: list[Any] = []

    async def handler(topic: str, message: Any) -> None:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.Event().wait()
        except TimeoutError:
            pass
        seen.append(sys.exc_info()[1])

    await pubsub.subscribe_topic("s", "room", handler)
    await pubsub.broadcast("room", 1)
    await eventually(lambda: seen == [None])


async def test_plain_iterators_and_generator_coroutines_are_awaited(make_pubsub):
    pubsub = make_pubsub()
    log: list[Any] = []

    class PlainIterator:
        def __init__(self, message: Any) -> None:
            self.message, self.steps = message, 0

        def __await__(self) -> PlainIterator:
            return self

        def __iter__(self) -> PlainIterator:
            return self

        def __next__(self) -> None:
            self.steps += 1
            if self.steps == 1:
                return None
            log.append(("plain", self.message))
            raise StopIteration

    @types.coroutine
    def generator_based(topic: str, message: Any) -> Generator[None, None, None]:
        yield None
        log.append(("generator", message))

    await pubsub.subscribe_topic("plain", "room", lambda topic, message: PlainIterator(message))
    await pubsub.subscribe_topic("generator", "room", generator_based)
    await pubsub.broadcast("room", 1)
    await eventually(lambda: sorted(log) == [("generator", 1), ("plain", 1)])
    assert pubsub.stats()["handler_errors"] == 0


async def test_a_subscribe_refused_after_stop_leaves_no_pump(make_pubsub):
    pubsub = make_pubsub()
    await pubsub.stop()
    with pytest.raises(StoppedError):
        await pubsub.subscribe_topic("s", "room", Recorder())
    assert not pubsub._pumps
    assert [task for task in asyncio.all_tasks() if task.get_name() == "pyview_fanout pump"] == []


def test_a_provider_in_a_cycle_through_its_handlers_is_collected():
    # A LiveView-like object holds the provider, and its bound method is the handler: the
    # cycles run through the sessions' and the pump's native parts (the parked pump's future,
    # its task, the pump), which the cycle collector sees.
    class View:
        def __init__(self, pubsub: InMemoryPubSub) -> None:
            self.pubsub = pubsub

        async def handle(self, topic: str, message: Any) -> None:
            pass

    refs: list[weakref.ref[InMemoryPubSub]] = []

    async def main() -> None:
        pubsub = InMemoryPubSub()
        refs.append(weakref.ref(pubsub))
        await pubsub.subscribe_topic("s", "room", View(pubsub).handle)
        await asyncio.sleep(0.01)  # the pump parks

    # A loop closed with its tasks pending (not `asyncio.run`, which would end the pump).
    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.close()
    del loop
    gc.collect()
    assert refs[0]() is None
