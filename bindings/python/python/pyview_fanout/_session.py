"""``SessionPubSub``: a provider bound to one session id."""

from __future__ import annotations

from typing import Any

from ._protocol import TopicHandler


class SessionPubSub:
    """The provider's operations for one session, as a LiveView socket uses them."""

    def __init__(self, provider: Any, session_id: str) -> None:
        self._provider = provider
        self._session_id = session_id

    @property
    def session_id(self) -> str:
        """The session these operations act for."""
        return self._session_id

    async def subscribe(self, topic: str, handler: TopicHandler) -> None:
        """Subscribes the session to ``topic`` with ``handler``."""
        await self._provider.subscribe_topic(self._session_id, topic, handler)

    async def unsubscribe(self, topic: str) -> None:
        """Unsubscribes the session from ``topic``."""
        await self._provider.unsubscribe_topic(self._session_id, topic)

    async def unsubscribe_all(self) -> None:
        """Unsubscribes the session from every topic (its disconnect)."""
        await self._provider.unsubscribe_all(self._session_id)

    async def broadcast(self, topic: str, message: Any) -> None:
        """Delivers ``message`` to every subscriber of ``topic``, this session included."""
        await self._provider.broadcast(topic, message)

    async def broadcast_from(self, topic: str, message: Any) -> None:
        """Delivers ``message`` to every subscriber of ``topic`` but this session."""
        await self._provider.broadcast_from(self._session_id, topic, message)

    async def broadcast_acknowledged(self, topic: str, message: Any) -> None:
        """``broadcast``, acknowledged by the broker (see the provider's)."""
        await self._provider.broadcast_acknowledged(topic, message)

    async def broadcast_from_acknowledged(self, topic: str, message: Any) -> None:
        """``broadcast_from``, acknowledged by the broker (see the provider's)."""
        await self._provider.broadcast_from_acknowledged(self._session_id, topic, message)
