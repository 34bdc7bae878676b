"""The three in-memory implementations the benchmarks compare, behind the design's
operations (``start``, ``subscribe_topic``, ``broadcast``, ``stop``):

- ``pyview_fanout``: ``pyview_fanout.InMemoryPubSub`` (fanout's engine), ``capacity`` messages
  per session's mailbox, ``drop_oldest``;
- ``pyview hub``: ``pyview.vendor.flet.pubsub.PubSubHub`` from ``pyview-web`` 0.9.0, the hub
  PyView uses today (left out when ``pyview-web`` is not installed);
- ``design``: the pure-Python ``InMemoryPubSub`` of PyView's design (``design_memory``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from design_memory import DesignInMemoryPubSub, TopicHandler
from pyview_fanout import InMemoryPubSub

HUB = "pyview hub"


class Peer(Protocol):
    async def start(self) -> None: ...
    async def subscribe_topic(self, session_id: str, topic: str, handler: TopicHandler) -> None: ...
    async def broadcast(self, topic: str, message: Any) -> None: ...
    async def stop(self) -> None: ...


class HubPeer:
    """PyView 0.9's hub under the design's names (what ``live_socket`` calls)."""

    def __init__(self) -> None:
        from pyview.vendor.flet.pubsub import PubSubHub

        self._hub = PubSubHub()

    async def start(self) -> None:
        pass

    async def subscribe_topic(self, session_id: str, topic: str, handler: TopicHandler) -> None:
        await self._hub.subscribe_topic_async(session_id, topic, handler)

    async def broadcast(self, topic: str, message: Any) -> None:
        await self._hub.send_all_on_topic_async(topic, message)

    async def stop(self) -> None:
        pass


def peers(capacity: int) -> dict[str, Callable[[], Peer]]:
    """Name to factory, in the order the runs alternate; the hub only when installed."""
    found: dict[str, Callable[[], Peer]] = {
        "pyview_fanout": lambda: InMemoryPubSub(capacity=capacity, policy="drop_oldest"),
    }
    try:
        import pyview.vendor.flet.pubsub  # noqa: F401

        found[HUB] = HubPeer
    except ImportError:
        print("pyview-web is not installed: the hub is left out")
    found["design"] = DesignInMemoryPubSub
    return found
