"""Messages are released once no mailbox or handler holds them: under every overflow policy,
on unsubscribe_all, on a disconnect and on stop. Each message is tracked by a weak reference,
and ``live_messages`` counts what the engine still holds."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import pytest

from conftest import Gate, eventually
from pyview_fanout import _core


class Payload:
    """A message that can be weakly referenced."""

    def __init__(self, n: int) -> None:
        self.n = n


POLICIES: list[Any] = [
    "drop_newest",
    "drop_oldest",
    "disconnect",
    {"block": {"timeout_ms": 20, "then": "drop_newest"}},
    {"block_once": {"timeout_ms": 20, "then": "drop_oldest"}},
]


async def broadcast_tracked(pubsub: Any, count: int) -> list[weakref.ref[Payload]]:
    refs = []
    for n in range(count):
        payload = Payload(n)
        refs.append(weakref.ref(payload))
        await pubsub.broadcast("room", payload)
        del payload
    return refs


def alive(refs: list[weakref.ref[Payload]]) -> int:
    return sum(ref() is not None for ref in refs)


@pytest.mark.parametrize("policy", POLICIES, ids=str)
async def test_every_message_is_released_under_each_policy(make_pubsub, policy):
    pubsub = make_pubsub(capacity=2, policy=policy, stop_grace_ms=100)
    gate = Gate()
    await pubsub.subscribe_topic("stalled", "room", gate)
    await pubsub.subscribe_topic("live", "room", lambda topic, message: asyncio.sleep(0))
    refs = await broadcast_tracked(pubsub, 1)
    await eventually(lambda: len(gate.calls) == 1)
    refs += await broadcast_tracked(pubsub, 9)
    gate.opened.set()
    # What the stalled handler is given after the gate opens is recorded; forget it.
    await eventually(lambda: gate.calls.clear() or alive(refs) == 0)
    assert _core.live_messages() == 0
    stats = pubsub.stats()
    assert stats["published"] == 10
    assert stats["recipients"] == stats["delivered"] + sum(stats["dropped"].values())


async def stall_with_queued(pubsub: Any, queued: int) -> tuple[Gate, list[weakref.ref[Payload]]]:
    """Subscribes a session whose handler stalls on the first message, then queues more."""
    gate = Gate()
    await pubsub.subscribe_topic("s", "room", gate)
    refs = await broadcast_tracked(pubsub, 1)
    await eventually(lambda: len(gate.calls) == 1)
    refs += await broadcast_tracked(pubsub, queued)
    return gate, refs


async def test_unsubscribe_all_releases_what_was_queued(make_pubsub):
    pubsub = make_pubsub(capacity=16, stop_grace_ms=100)
    gate, refs = await stall_with_queued(pubsub, 8)
    assert alive(refs) == 9
    await pubsub.unsubscribe_all("s")
    # Released by the call itself: the queued eight; the first is the running handler's.
    assert alive(refs[1:]) == 0
    gate.calls.clear()
    gate.opened.set()
    await eventually(lambda: alive(refs) == 0)
    assert pubsub.stats()["dropped"]["unsubscribed"] == 8


async def test_stop_releases_what_was_queued(make_pubsub):
    pubsub = make_pubsub(capacity=16, stop_grace_ms=50)
    gate, refs = await stall_with_queued(pubsub, 8)
    await pubsub.stop()
    gate.calls.clear()
    assert alive(refs) == 0
    assert _core.live_messages() == 0
    stats = pubsub.stats()
    assert stats["dropped"]["stopped"] == 8
    assert stats["handlers_cancelled"] == 1


async def test_messages_nobody_receives_are_released_at_once(make_pubsub):
    pubsub = make_pubsub()
    refs = await broadcast_tracked(pubsub, 5)
    assert alive(refs) == 0


async def test_a_handler_keeps_the_message_only_while_it_holds_it(make_pubsub):
    pubsub = make_pubsub()
    kept: list[Payload] = []

    async def keep(topic: str, message: Payload) -> None:
        kept.append(message)

    await pubsub.subscribe_topic("s", "room", keep)
    refs = await broadcast_tracked(pubsub, 3)
    await eventually(lambda: len(kept) == 3)
    assert alive(refs) == 3
    kept.clear()
    assert alive(refs) == 0
