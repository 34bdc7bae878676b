"""The contract's guarantees (G1–G9) for InMemoryPubSub, as a Python caller sees them."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from conftest import Gate, Recorder, eventually
from pyview_fanout import (
    InvalidSessionIdError,
    InvalidTopicError,
    PayloadTooLargeError,
    SessionPubSub,
    StoppedError,
)


async def test_every_subscriber_gets_each_message_once(make_pubsub):
    # G1
    pubsub = make_pubsub()
    recorders = [Recorder() for _ in range(3)]
    for i, recorder in enumerate(recorders):
        await pubsub.subscribe_topic(f"s{i}", "room", recorder)
    for n in range(10):
        await pubsub.broadcast("room", n)
    await eventually(lambda: all(len(r.calls) == 10 for r in recorders))
    await asyncio.sleep(0.01)
    for recorder in recorders:
        assert recorder.calls == [("room", n) for n in range(10)]
    assert pubsub.stats()["delivered"] == 30


async def test_the_same_object_reaches_every_subscriber(make_pubsub):
    pubsub = make_pubsub()
    first, second = Recorder(), Recorder()
    await pubsub.subscribe_topic("s1", "room", first)
    await pubsub.subscribe_topic("s2", "room", second)
    message = {"text": "hello", "items": [1, 2]}
    await pubsub.broadcast("room", message)
    await eventually(lambda: first.calls and second.calls)
    assert first.messages[0] is message
    assert second.messages[0] is message


async def test_broadcast_from_skips_the_sender(make_pubsub):
    pubsub = make_pubsub()
    sender, other = Recorder(), Recorder()
    await pubsub.subscribe_topic("sender", "room", sender)
    await pubsub.subscribe_topic("other", "room", other)
    await pubsub.broadcast_from("sender", "room", "hi")
    await pubsub.broadcast("room", "all")
    await eventually(lambda: len(other.calls) == 2)
    await eventually(lambda: len(sender.calls) == 1)
    assert sender.messages == ["all"]
    assert other.messages == ["hi", "all"]


async def test_session_pubsub_binds_the_session(make_pubsub):
    pubsub = make_pubsub()
    tab, other = SessionPubSub(pubsub, "tab"), SessionPubSub(pubsub, "other")
    tab_seen, other_seen = Recorder(), Recorder()
    await tab.subscribe("room", tab_seen)
    await other.subscribe("room", other_seen)
    await tab.broadcast_from("room", "from tab")
    await tab.broadcast("room", "to all")
    await eventually(lambda: len(other_seen.calls) == 2 and len(tab_seen.calls) == 1)
    assert tab_seen.messages == ["to all"]
    await tab.unsubscribe("room")
    await other.unsubscribe_all()
    await tab.broadcast("room", "nobody")
    assert pubsub.stats()["sessions"] == 0


async def test_nothing_starts_after_unsubscribe_all(make_pubsub):
    # G2: queued messages are discarded and counted; the running handler is the last.
    pubsub = make_pubsub(capacity=16)
    gate = Gate()
    await pubsub.subscribe_topic("s", "room", gate)
    for n in range(5):
        await pubsub.broadcast("room", n)
    await eventually(lambda: len(gate.calls) == 1)
    await pubsub.unsubscribe_all("s")
    gate.opened.set()
    await pubsub.broadcast("room", "after")
    await asyncio.sleep(0.05)
    assert gate.calls == [("room", 0)]
    assert pubsub.stats()["dropped"]["unsubscribed"] == 4


async def test_nothing_arrives_after_unsubscribe_topic(make_pubsub):
    # G2
    pubsub = make_pubsub()
    recorder = Recorder()
    await pubsub.subscribe_topic("s", "a", recorder)
    await pubsub.subscribe_topic("s", "b", recorder)
    await pubsub.unsubscribe_topic("s", "a")
    await pubsub.broadcast("a", 1)
    await pubsub.broadcast("b", 2)
    await eventually(lambda: len(recorder.calls) == 1)
    await asyncio.sleep(0.01)
    assert recorder.calls == [("b", 2)]


async def test_the_last_unsubscribe_ends_the_session(make_pubsub):
    # G7: no entry is left once every session has left.
    pubsub = make_pubsub()
    await pubsub.subscribe_topic("s1", "a", Recorder())
    await pubsub.subscribe_topic("s2", "b", Recorder())
    await pubsub.unsubscribe_topic("s1", "a")
    await pubsub.unsubscribe_all("s2")
    stats = pubsub.stats()
    assert (stats["sessions"], stats["topics"], stats["subscriptions"]) == (0, 0, 0)
    await eventually(lambda: not pubsub._live())


async def test_subscribing_twice_is_one_subscription_with_the_newer_handler(make_pubsub):
    # G3
    pubsub = make_pubsub()
    older, newer = Recorder(), Recorder()
    await pubsub.subscribe_topic("s", "room", older)
    await pubsub.subscribe_topic("s", "room", newer)
    await pubsub.broadcast("room", 1)
    await eventually(lambda: newer.calls)
    await asyncio.sleep(0.01)
    assert older.calls == []
    assert newer.calls == [("room", 1)]
    assert pubsub.stats()["subscriptions"] == 1


async def test_unsubscribing_what_is_not_subscribed_succeeds(make_pubsub):
    # G3
    pubsub = make_pubsub()
    await pubsub.unsubscribe_topic("nobody", "room")
    await pubsub.unsubscribe_all("nobody")
    await pubsub.subscribe_topic("s", "a", Recorder())
    await pubsub.unsubscribe_topic("s", "b")
    assert pubsub.stats()["subscriptions"] == 1


async def test_one_publisher_order_holds_across_topics(make_pubsub):
    # G4
    pubsub = make_pubsub(capacity=1024)
    recorder = Recorder()
    topics = ["a", "b", "c"]
    for topic in topics:
        await pubsub.subscribe_topic("s", topic, recorder)
    for n in range(600):
        await pubsub.broadcast(topics[n % 3], n)
        if n % 7 == 0:
            await asyncio.sleep(0)
    await eventually(lambda: len(recorder.calls) == 600)
    assert recorder.messages == list(range(600))
    assert [topic for topic, _ in recorder.calls] == [topics[n % 3] for n in range(600)]


async def test_a_sessions_handlers_never_overlap(make_pubsub):
    # G4
    pubsub = make_pubsub(capacity=512)
    running = 0
    most = 0
    handled = 0

    async def handler(topic: str, message: Any) -> None:
        nonlocal running, most, handled
        running += 1
        most = max(most, running)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        running -= 1
        handled += 1

    await pubsub.subscribe_topic("s", "a", handler)
    await pubsub.subscribe_topic("s", "b", handler)
    for n in range(200):
        await pubsub.broadcast("a" if n % 2 else "b", n)
    await eventually(lambda: handled == 200)
    assert most == 1


async def test_a_raising_handler_is_logged_counted_and_the_session_goes_on(make_pubsub, caplog):
    # G5
    pubsub = make_pubsub()
    seen: list[int] = []

    async def flaky(topic: str, message: int) -> None:
        seen.append(message)
        if message % 2 == 0:
            raise ValueError(f"bad message {message}")

    other = Recorder()
    await pubsub.subscribe_topic("flaky", "room", flaky)
    await pubsub.subscribe_topic("other", "room", other)
    with caplog.at_level(logging.ERROR, logger="pyview_fanout"):
        for n in range(6):
            await pubsub.broadcast("room", n)
        await eventually(lambda: len(seen) == 6 and len(other.calls) == 6)
    assert seen == list(range(6))
    assert pubsub.stats()["handler_errors"] == 3
    raised = [r for r in caplog.records if r.name == "pyview_fanout" and r.exc_info]
    assert len(raised) == 3
    assert "bad message 4" in str(raised[-1].exc_info[1])


async def test_a_stalled_handler_delays_no_other_session(make_pubsub):
    # G5, G7: the stalled session holds at most its capacity.
    pubsub = make_pubsub(capacity=8, policy="drop_oldest", stop_grace_ms=100)
    stalled = Gate()
    other = Recorder()
    await pubsub.subscribe_topic("stalled", "room", stalled)
    await pubsub.subscribe_topic("other", "room", other)
    for n in range(1000):
        await pubsub.broadcast("room", n)
        await asyncio.sleep(0)
    await eventually(lambda: len(other.calls) == 1000)
    assert other.messages == list(range(1000))
    assert len(stalled.calls) == 1
    queued = pubsub.session_stats("stalled")
    assert queued is not None and queued["queued"] == 8
    assert pubsub.stats()["dropped"]["drop_oldest"] == 1000 - 1 - 8
    stalled.opened.set()
    await eventually(lambda: len(stalled.calls) == 9)
    # The survivors are the newest eight, in order.
    assert [m for _, m in stalled.calls[1:]] == list(range(992, 1000))


@pytest.mark.parametrize(
    "topic",
    ["*", ">", "?", "[a]", "a.b", "a.*", "'quoted'", '"double"', "with space", "ünïcødé", "日本", "a\\b"],
)
async def test_topics_are_literal(make_pubsub, topic):
    # G6
    pubsub = make_pubsub()
    exact, wildcard_like = Recorder(), Recorder()
    await pubsub.subscribe_topic("exact", topic, exact)
    await pubsub.subscribe_topic("near", topic + "x", wildcard_like)
    await pubsub.broadcast(topic, "m")
    await pubsub.broadcast("other", "n")
    await eventually(lambda: exact.calls)
    await asyncio.sleep(0.01)
    assert exact.calls == [(topic, "m")]
    assert wildcard_like.calls == []


async def test_bad_input_raises_typed_errors_and_changes_nothing(make_pubsub):
    # G9
    pubsub = make_pubsub(limits={"max_topic_bytes": 8, "max_payload_bytes": 4, "max_session_id_bytes": 6})
    recorder = Recorder()
    await pubsub.subscribe_topic("s", "room", recorder)
    with pytest.raises(InvalidTopicError, match="topic is empty"):
        await pubsub.subscribe_topic("s", "", recorder)
    with pytest.raises(InvalidTopicError, match="topic is 9 bytes; the limit is 8"):
        await pubsub.broadcast("123456789", 1)
    with pytest.raises(InvalidTopicError):
        await pubsub.unsubscribe_topic("nobody", "")
    with pytest.raises(InvalidSessionIdError, match="session id is 7 bytes; the limit is 6"):
        await pubsub.subscribe_topic("1234567", "room", recorder)
    with pytest.raises(InvalidSessionIdError, match="session id is empty"):
        await pubsub.unsubscribe_all("")
    with pytest.raises(PayloadTooLargeError, match="payload is 5 bytes; the limit is 4"):
        await pubsub.broadcast("room", b"12345")
    with pytest.raises(PayloadTooLargeError, match="payload is 5 bytes; the limit is 4"):
        await pubsub.broadcast("room", "ünï")
    with pytest.raises(TypeError):
        await pubsub.subscribe_topic("s", "room", "not callable")  # type: ignore[arg-type]
    # A payload of unknown size is not limited; the subscription is intact.
    await pubsub.broadcast("room", {"any": "object"})
    await pubsub.broadcast("room", b"1234")
    await eventually(lambda: len(recorder.calls) == 2)
    assert recorder.messages == [{"any": "object"}, b"1234"]
    assert pubsub.stats()["subscriptions"] == 1


async def test_stop_is_idempotent_and_later_calls_raise_stopped(make_pubsub):
    # G8
    pubsub = make_pubsub()
    await pubsub.start()
    await pubsub.subscribe_topic("s", "room", Recorder())
    await pubsub.stop()
    await pubsub.stop()
    assert not pubsub._live()
    for call in (
        pubsub.subscribe_topic("s", "room", Recorder()),
        pubsub.unsubscribe_topic("s", "room"),
        pubsub.unsubscribe_all("s"),
        pubsub.broadcast("room", 1),
        pubsub.broadcast_from("s", "room", 1),
        pubsub.start(),
    ):
        with pytest.raises(StoppedError, match="the provider is stopped"):
            await call


async def test_a_broadcast_from_another_thread_reaches_this_loop(make_pubsub):
    pubsub = make_pubsub()
    recorder = Recorder()
    await pubsub.subscribe_topic("s", "room", recorder)

    def publish() -> None:
        async def send() -> None:
            for n in range(100):
                await pubsub.broadcast("room", n)

        asyncio.run(send())

    thread = threading.Thread(target=publish)
    thread.start()
    await asyncio.to_thread(thread.join)
    await eventually(lambda: len(recorder.calls) == 100)
    assert recorder.messages == list(range(100))


async def test_block_waits_for_room_then_delivers_in_order(make_pubsub):
    pubsub = make_pubsub(capacity=2, policy={"block": {"timeout_ms": 5000, "then": "drop_newest"}})
    gate = Gate()
    await pubsub.subscribe_topic("s", "room", gate)
    await pubsub.broadcast("room", 0)
    await eventually(lambda: len(gate.calls) == 1)
    await pubsub.broadcast("room", 1)
    await pubsub.broadcast("room", 2)
    # The mailbox holds 1 and 2; this one waits for room.
    blocked = asyncio.ensure_future(pubsub.broadcast("room", 3))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    gate.opened.set()
    await asyncio.wait_for(blocked, 5)
    await eventually(lambda: len(gate.calls) == 4)
    assert [m for _, m in gate.calls] == [0, 1, 2, 3]
    assert pubsub.stats()["block_waits"] == 1


async def test_block_times_out_into_its_fallback(make_pubsub):
    pubsub = make_pubsub(capacity=1, policy={"block": {"timeout_ms": 30, "then": "drop_newest"}}, stop_grace_ms=50)
    gate = Gate()
    await pubsub.subscribe_topic("s", "room", gate)
    await pubsub.broadcast("room", 0)
    await eventually(lambda: len(gate.calls) == 1)
    await pubsub.broadcast("room", 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await pubsub.broadcast("room", 2)
    assert loop.time() - started >= 0.025
    stats = pubsub.stats()
    assert stats["block_timeouts"] == 1
    assert stats["dropped"]["drop_newest"] == 1


async def test_disconnect_closes_the_slow_session_and_a_new_subscribe_starts_afresh(make_pubsub):
    pubsub = make_pubsub(capacity=2, policy="disconnect")
    gate = Gate()
    await pubsub.subscribe_topic("slow", "room", gate)
    await pubsub.broadcast("room", 0)
    await eventually(lambda: len(gate.calls) == 1)
    for n in range(1, 4):
        await pubsub.broadcast("room", n)
    assert pubsub.stats()["disconnects"] == 1
    gate.opened.set()
    await eventually(lambda: pubsub.stats()["sessions"] == 0)
    fresh = Recorder()
    await pubsub.subscribe_topic("slow", "room", fresh)
    await pubsub.broadcast("room", "again")
    await eventually(lambda: fresh.calls)
    assert fresh.messages == ["again"]
    assert len(gate.calls) == 1
