"""The pluggable pub/sub interface of PyView's design, as a structural protocol."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol, runtime_checkable

TopicHandler = Callable[[str, Any], Coroutine[Any, Any, None]]
"""An async callable ``(topic, message)``, run for each message of a subscribed topic."""


@runtime_checkable
class PubSubProvider(Protocol):
    """What PyView needs of a pub/sub provider: the design's ``PubSubProvider``.

    ``isinstance(provider, PubSubProvider)`` checks that the methods are present.
    """

    async def subscribe_topic(self, session_id: str, topic: str, handler: TopicHandler) -> None:
        """Subscribes the session to the topic with this handler."""
        ...

    async def unsubscribe_topic(self, session_id: str, topic: str) -> None:
        """Removes one subscription."""
        ...

    async def unsubscribe_all(self, session_id: str) -> None:
        """Removes every subscription of the session (its disconnect)."""
        ...

    async def broadcast(self, topic: str, message: Any) -> None:
        """Delivers the message to every subscriber of the topic."""
        ...

    async def start(self) -> None:
        """Called when the application starts."""
        ...

    async def stop(self) -> None:
        """Called when the application shuts down."""
        ...
