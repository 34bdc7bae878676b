"""Fixtures shared by the contract tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from pyview_fanout import InMemoryPubSub


@pytest.fixture
async def make_pubsub() -> AsyncIterator[Callable[..., InMemoryPubSub]]:
    """Builds started providers and stops them at the end of the test."""
    made: list[InMemoryPubSub] = []

    def make(*args: Any, **kwargs: Any) -> InMemoryPubSub:
        pubsub = InMemoryPubSub(*args, **kwargs)
        made.append(pubsub)
        return pubsub

    yield make
    for pubsub in made:
        await pubsub.stop()


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Waits, yielding to the loop, until ``predicate()`` holds; fails after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.001)


async def settled(pubsub: Any, event: asyncio.Event, handlers_cancelled: int) -> None:
    """Waits for ``event``, then for ``pubsub`` to hold no session or running handler, and
    checks how many handlers it cancelled."""
    async with asyncio.timeout(5):
        await event.wait()
    await eventually(lambda: not pubsub._live())
    assert pubsub.stats()["handlers_cancelled"] == handlers_cancelled


class Recorder:
    """A handler that records what it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def __call__(self, topic: str, message: Any) -> None:
        self.calls.append((topic, message))

    @property
    def messages(self) -> list[Any]:
        return [message for _, message in self.calls]


class Gate:
    """A handler that records each call and then waits until the gate opens."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.opened = asyncio.Event()

    async def __call__(self, topic: str, message: Any) -> None:
        self.calls.append((topic, message))
        await self.opened.wait()
