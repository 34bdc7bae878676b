"""The distributed providers, RedisPubSub and PostgresPubSub, with two instances on the
machine's Redis and PostgreSQL: one suite for both (the contract where it crosses instances,
the wire encoding of messages, lifecycle), then each broker's own settings and limits."""

from __future__ import annotations

import asyncio
import json
import pickle
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import Recorder, eventually
from pyview_fanout import (
    BrokerError,
    ConfigError,
    NotStartedError,
    PayloadTooLargeError,
    PostgresPubSub,
    RedisPubSub,
    SessionPubSub,
    StoppedError,
)
from services import DATABASE_URL, REDIS_URL, PrivateRedis, require


BROKERS = {
    "redis": (RedisPubSub, REDIS_URL, 6379, "Redis"),
    "postgres": (PostgresPubSub, DATABASE_URL, 5432, "PostgreSQL"),
}


@pytest.fixture(params=sorted(BROKERS))
async def make_instance(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Any]]:
    """Builds started instances of one distributed provider (each test runs with each),
    sharing one channel prefix of the test's own, and stops them at the end."""
    provider_class, url, port, name = BROKERS[request.param]
    require(url, port, name)
    # PostgreSQL channel names are at most 63 bytes: a short prefix leaves room for topics.
    prefix = f"t{uuid.uuid4().hex[:12]}_"
    made: list[Any] = []

    async def make(**kwargs: Any) -> Any:
        kwargs.setdefault("url", url)
        kwargs.setdefault("channel_prefix", prefix)
        pubsub = provider_class(**kwargs)
        made.append(pubsub)
        await pubsub.start()
        return pubsub

    yield make
    for pubsub in made:
        await pubsub.stop()


async def test_a_broadcast_on_one_instance_reaches_a_session_on_the_other(make_instance):
    # G1 across instances
    a, b = await make_instance(), await make_instance()
    on_a, on_b = Recorder(), Recorder()
    await a.subscribe_topic("tab-a", "room", on_a)
    await b.subscribe_topic("tab-b", "room", on_b)
    await a.broadcast("room", {"text": "hello"})
    await eventually(lambda: on_b.calls and on_a.calls)
    await asyncio.sleep(0.05)
    assert on_b.calls == [("room", {"text": "hello"})]
    assert on_a.calls == [("room", {"text": "hello"})]


async def test_one_publishers_order_holds_across_instances_and_topics(make_instance):
    # G4: one session on b subscribed to two topics gets a's messages in publish order; its
    # mailbox holds them all, so the policy drops none of the burst
    a, b = await make_instance(), await make_instance(capacity=1024)
    recorder = Recorder()
    await b.subscribe_topic("tab", "left", recorder)
    await b.subscribe_topic("tab", "right", recorder)
    sent = [("left" if n % 3 else "right", n) for n in range(300)]
    for topic, n in sent:
        await a.broadcast(topic, n)
    await eventually(lambda: len(recorder.calls) == len(sent))
    assert recorder.calls == sent
    assert not any(b.stats()["dropped"].values())


async def test_broadcast_from_skips_the_sender_on_every_instance(make_instance):
    a, b = await make_instance(), await make_instance()
    sender, local, remote = Recorder(), Recorder(), Recorder()
    await a.subscribe_topic("sender", "room", sender)
    await a.subscribe_topic("local", "room", local)
    await b.subscribe_topic("remote", "room", remote)
    await a.broadcast_from("sender", "room", "from sender")
    await a.broadcast("room", "to all")
    await eventually(lambda: len(local.calls) == 2 and len(remote.calls) == 2 and len(sender.calls) == 1)
    assert sender.messages == ["to all"]
    assert local.messages == ["from sender", "to all"]
    assert remote.messages == ["from sender", "to all"]


async def test_broadcast_from_skips_a_sender_on_the_other_instance(make_instance):
    a, b = await make_instance(), await make_instance()
    sender, other = Recorder(), Recorder()
    await b.subscribe_topic("sender", "room", sender)
    await b.subscribe_topic("other", "room", other)
    await a.broadcast_from("sender", "room", "skip sender")
    await a.broadcast("room", "all")
    await eventually(lambda: len(other.calls) == 2 and len(sender.calls) == 1)
    assert sender.messages == ["all"]


async def test_nothing_arrives_after_unsubscribe_all(make_instance):
    # G2: a's broadcasts after b's unsubscribe_all returned never reach the session
    a, b = await make_instance(), await make_instance()
    recorder, witness = Recorder(), Recorder()
    await b.subscribe_topic("gone", "room", recorder)
    await b.subscribe_topic("witness", "room", witness)
    await a.broadcast("room", "before")
    await eventually(lambda: recorder.calls and witness.calls)
    await b.unsubscribe_all("gone")
    for n in range(20):
        await a.broadcast("room", n)
    await eventually(lambda: len(witness.calls) == 21)
    assert recorder.messages == ["before"]
    assert b.session_stats("gone") is None


async def test_stats_count_each_side(make_instance):
    a, b = await make_instance(), await make_instance()
    recorder = Recorder()
    await b.subscribe_topic("tab", "room", recorder)
    for n in range(5):
        await a.broadcast("room", n)
    await eventually(lambda: len(recorder.calls) == 5)
    # The publisher counts a message once the broker's reply is read, which may come after
    # the other instance has received it.
    await eventually(lambda: a.stats()["broker"]["published"] == 5)
    sent, received = a.stats(), b.stats()
    assert sent["published"] == 5
    assert sent["broker"]["connected"] and sent["broker"]["publisher_connected"]
    assert received["broker"]["received"] == 5
    assert received["delivered"] == 5
    assert received["broker"]["channels"] == 1
    assert received["decode_errors"] == 0
    await b.unsubscribe_all("tab")
    await eventually(lambda: b.stats()["broker"]["channels"] == 0)
    assert b.stats()["sessions"] == 0


async def test_an_acknowledged_broadcast_returns_once_the_broker_answered(make_instance):
    a, b = await make_instance(), await make_instance()
    recorder = Recorder()
    await b.subscribe_topic("tab", "room", recorder)
    await a.broadcast_acknowledged("room", "first")
    # Counted before the caller is told: no waiting needed.
    assert a.stats()["broker"]["published"] == 1
    await SessionPubSub(a, "sender").broadcast_from_acknowledged("room", "second")
    assert a.stats()["broker"]["published"] == 2
    await eventually(lambda: recorder.messages == ["first", "second"])


async def test_an_unanswered_acknowledged_broadcast_raises_broker_error():
    redis = PrivateRedis()
    a = RedisPubSub(url=redis.url, response_timeout_ms=300, health_check_interval_ms=100)
    try:
        await a.start()
        recorder = Recorder()
        await a.subscribe_topic("tab", "room", recorder)
        redis.pause()
        with pytest.raises(BrokerError, match="did not acknowledge"):
            await a.broadcast_acknowledged("room", "paused")
        # Local sessions have it either way.
        await eventually(lambda: recorder.messages == ["paused"])
    finally:
        redis.resume()
        await a.stop()
        redis.close()


async def test_bytes_travel_as_bytes_and_other_messages_as_json(make_instance):
    a, b = await make_instance(), await make_instance()
    recorder = Recorder()
    await b.subscribe_topic("tab", "room", recorder)
    messages = [b"\x00\x01raw", bytearray(b"array"), {"n": 1, "list": [1, "two", None]}, "text", 3.5, None]
    for message in messages:
        await a.broadcast("room", message)
    await eventually(lambda: len(recorder.calls) == len(messages))
    assert recorder.messages == [b"\x00\x01raw", b"array", {"n": 1, "list": [1, "two", None]}, "text", 3.5, None]
    assert type(recorder.messages[1]) is bytes


@dataclass
class Point:
    x: int
    y: int


async def test_a_message_json_cannot_encode_is_a_type_error_naming_its_type(make_instance):
    a = await make_instance()
    recorder = Recorder()
    await a.subscribe_topic("tab", "room", recorder)
    with pytest.raises(TypeError, match="Point"):
        await a.broadcast("room", {"point": Point(1, 2)})
    with pytest.raises(TypeError, match="Point"):
        await a.broadcast_from("tab", "room", Point(1, 2))
    await a.broadcast("room", "after")
    await eventually(lambda: recorder.calls)
    assert recorder.messages == ["after"]
    assert a.stats()["published"] == 1


async def test_a_codec_carries_what_json_cannot(make_instance):
    codec = (pickle.dumps, pickle.loads)
    a, b = await make_instance(codec=codec), await make_instance(codec=codec)
    recorder = Recorder()
    await b.subscribe_topic("tab", "room", recorder)
    await a.broadcast("room", {"point": Point(1, 2)})
    await a.broadcast("room", b"still raw")
    await eventually(lambda: len(recorder.calls) == 2)
    assert recorder.messages == [{"point": Point(1, 2)}, b"still raw"]


async def test_a_codec_that_returns_no_bytes_is_a_type_error(make_instance):
    a = await make_instance(codec=(str, str))
    with pytest.raises(TypeError, match="returned a str"):
        await a.broadcast("room", 1)


def test_a_codec_must_be_a_pair_of_callables():
    with pytest.raises(TypeError, match="pair of callables"):
        RedisPubSub(codec=(json.dumps,))  # type: ignore[arg-type]


async def test_a_message_the_receiver_cannot_decode_is_counted_and_skipped(make_instance, caplog):
    # G9: the receiving session logs, counts, and goes on
    a = await make_instance(codec=(lambda message: b"not json", json.loads))
    b = await make_instance()
    recorder = Recorder()
    await b.subscribe_topic("tab", "room", recorder)
    await a.broadcast("room", {"lost": True})
    await a.broadcast("room", b"readable")
    await eventually(lambda: recorder.calls)
    assert recorder.messages == [b"readable"]
    assert b.stats()["decode_errors"] == 1
    assert "cannot decode a message" in caplog.text


async def test_a_redis_envelope_over_the_limit_is_refused():
    require(REDIS_URL, 6379, "Redis")
    pubsub = RedisPubSub(url=REDIS_URL, channel_prefix=f"t{uuid.uuid4().hex[:12]}_", max_envelope_bytes=2048)
    await pubsub.start()
    try:
        with pytest.raises(PayloadTooLargeError, match="max_envelope_bytes"):
            await pubsub.broadcast("room", b"x" * 4096)
    finally:
        await pubsub.stop()


@pytest.mark.parametrize("broker", sorted(BROKERS))
async def test_operations_before_start_raise_not_started(broker):
    provider_class, url, port, name = BROKERS[broker]
    require(url, port, name)
    pubsub = provider_class(url=url)
    with pytest.raises(NotStartedError, match="start"):
        await pubsub.subscribe_topic("tab", "room", Recorder())
    assert pubsub.stats()["sessions"] == 0
    await pubsub.stop()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1", "postgres://postgres@127.0.0.1:1/test"])
async def test_start_without_the_broker_is_a_broker_error(url):
    # Nothing listens on port 1.
    provider_class = RedisPubSub if url.startswith("redis") else PostgresPubSub
    pubsub = provider_class(url=url, connect_timeout_ms=200)
    with pytest.raises(BrokerError, match="cannot connect"):
        await pubsub.start()
    await pubsub.stop()


async def test_after_stop_operations_raise_stopped(make_instance):
    # G8
    a = await make_instance()
    await a.subscribe_topic("tab", "room", Recorder())
    await a.stop()
    await a.stop()
    with pytest.raises(StoppedError):
        await a.broadcast("room", 1)
    with pytest.raises(StoppedError):
        await a.subscribe_topic("tab", "room", Recorder())


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"url": "http://nowhere"}, "url"),
        ({"url": 6379}, "url"),
        ({"connect_timeout_ms": 0}, "connect_timeout_ms"),
        ({"publish_queue": 0}, "publish_queue"),
        ({"max_envelope_bytes": -1}, "max_envelope_bytes"),
        ({"reconnect_backoff_min_ms": 900, "reconnect_backoff_max_ms": 100}, "reconnect_backoff_min_ms"),
        ({"capacity": 0}, "capacity"),
    ],
)
def test_bad_redis_settings_raise_config_error_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError) as raised:
        RedisPubSub(**kwargs)
    assert raised.value.key == key
    assert key in str(raised.value)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"url": "redis://nowhere"}, "url"),
        ({"large_payloads": "sometimes"}, "large_payloads"),
        ({"connect_timeout_ms": 0}, "connect_timeout_ms"),
        ({"publish_queue": "many"}, "publish_queue"),
        ({"capacity": 0}, "capacity"),
    ],
)
def test_bad_postgres_settings_raise_config_error_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError) as raised:
        PostgresPubSub(**kwargs)
    assert raised.value.key == key
    assert key in str(raised.value)


async def test_a_message_over_postgres_notify_limit_is_refused():
    require(DATABASE_URL, 5432, "PostgreSQL")
    pubsub = PostgresPubSub(url=DATABASE_URL, channel_prefix=f"t{uuid.uuid4().hex[:12]}_")
    await pubsub.start()
    try:
        with pytest.raises(PayloadTooLargeError, match="7999"):
            await pubsub.broadcast("room", b"x" * 8000)
    finally:
        await pubsub.stop()


async def test_a_subscribe_redis_did_not_confirm_stands_locally_and_is_confirmed_later():
    redis = PrivateRedis()
    fast = {"url": redis.url, "response_timeout_ms": 300, "health_check_interval_ms": 100}
    a, b = RedisPubSub(**fast), RedisPubSub(**fast)
    try:
        await a.start()
        await b.start()
        redis.pause()
        recorder = Recorder()
        with pytest.raises(BrokerError, match="subscribed on this instance only"):
            await a.subscribe_topic("tab", "room", recorder)
        assert a.stats()["subscriptions"] == 1
        await a.broadcast_from("other", "room", "local")
        await eventually(lambda: recorder.messages == ["local"])
        redis.resume()
        # Once the connections are back, a's channel is subscribed again and b reaches it.
        await eventually(lambda: a.stats()["broker"]["connected"] and a.stats()["broker"]["channels"] == 1)
        await eventually(lambda: b.stats()["broker"]["publisher_connected"])
        await b.broadcast("room", "remote")
        await eventually(lambda: recorder.messages == ["local", "remote"])
    finally:
        await a.stop()
        await b.stop()
        redis.close()
