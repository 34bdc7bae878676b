"""The pure-Python ``InMemoryPubSub`` of PyView's pluggable pub/sub design, as the design
document writes it out (``pyview/pubsub/memory.py``; not in a ``pyview-web`` release), for the
benchmarks to compare with. Each broadcast spawns one task per subscriber."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

TopicHandler = Callable[[str, Any], Coroutine[Any, Any, None]]


class DesignInMemoryPubSub:
    """The design's default in-memory provider, unchanged apart from the name."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        # topic -> {session_id -> handler}
        self._topic_subscribers: dict[str, dict[str, TopicHandler]] = {}
        # session_id -> {topic -> handler}
        self._session_topics: dict[str, dict[str, TopicHandler]] = {}

    async def subscribe_topic(self, session_id: str, topic: str, handler: TopicHandler) -> None:
        async with self._lock:
            if topic not in self._topic_subscribers:
                self._topic_subscribers[topic] = {}
            self._topic_subscribers[topic][session_id] = handler

            if session_id not in self._session_topics:
                self._session_topics[session_id] = {}
            self._session_topics[session_id][topic] = handler

    async def unsubscribe_topic(self, session_id: str, topic: str) -> None:
        async with self._lock:
            if topic in self._topic_subscribers:
                self._topic_subscribers[topic].pop(session_id, None)
                if not self._topic_subscribers[topic]:
                    del self._topic_subscribers[topic]

            if session_id in self._session_topics:
                self._session_topics[session_id].pop(topic, None)
                if not self._session_topics[session_id]:
                    del self._session_topics[session_id]

    async def unsubscribe_all(self, session_id: str) -> None:
        async with self._lock:
            if session_id in self._session_topics:
                for topic in list(self._session_topics[session_id].keys()):
                    if topic in self._topic_subscribers:
                        self._topic_subscribers[topic].pop(session_id, None)
                        if not self._topic_subscribers[topic]:
                            del self._topic_subscribers[topic]
                del self._session_topics[session_id]

    async def broadcast(self, topic: str, message: Any) -> None:
        async with self._lock:
            handlers = list(self._topic_subscribers.get(topic, {}).values())

        # Dispatch outside the lock to prevent deadlocks
        for handler in handlers:
            asyncio.create_task(handler(topic, message))

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass
