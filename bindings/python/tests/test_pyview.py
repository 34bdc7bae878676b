"""``pyview_fanout.pyview.install`` in a real PyView 0.9 application (``app/``), driven over
Starlette's test client: pages, websockets, navigation, and the adapter's traps."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pyview import PyView
from starlette.testclient import TestClient

from app import counter
from app.counter import make_app
from conftest import Recorder, eventually
from pyview_client import Page, values
from pyview_fanout import InMemoryPubSub, RedisPubSub, StoppedError
from pyview_fanout.pyview import FanoutHub, SocketPubSub, install
from services import REDIS_URL, PrivateRedis, require


@pytest.fixture(autouse=True)
def fresh_count() -> Iterator[None]:
    counter.COUNT.value = 0
    yield


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    """Waits, from the test's thread, until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_an_event_in_one_page_updates_the_other():
    provider = InMemoryPubSub()
    with TestClient(make_app(provider)) as client:
        first, second = Page(client), Page(client)
        assert "0" in values(first.join())
        second.join()
        first.click("increment")
        assert second.pushed_diff() == {"0": "1"}
        second.click("increment")
        assert first.pushed_diff() == {"0": "1"}
        assert first.pushed_diff() == {"0": "2"}
        assert second.pushed_diff() == {"0": "2"}
        first.close()
        second.close()
        wait_until(lambda: provider.stats()["sessions"] == 0)


def test_the_sender_receives_its_own_broadcast():
    with TestClient(make_app(InMemoryPubSub())) as client:
        page = Page(client)
        page.join()
        page.click("increment")
        assert page.pushed_diff() == {"0": "1"}
        page.close()


def test_the_lifespan_starts_the_provider_before_the_apps_own_and_stops_it_after():
    provider = InMemoryPubSub()
    seen: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        # The app's own start-up and shutdown can use the provider.
        await provider.broadcast("startup", 1)
        seen.append("app started")
        yield
        await provider.broadcast("shutdown", 1)
        seen.append("app stopped")

    app = PyView(lifespan=lifespan)
    app.add_live_view("/", counter.SharedCounter)
    hub = install(app, provider)
    assert isinstance(hub, FanoutHub)
    with TestClient(app) as client:
        assert seen == ["app started"]
        page = Page(client)
        page.join()
        page.close()
    assert seen == ["app started", "app stopped"]
    assert provider.stats()["published"] == 2
    with pytest.raises(StoppedError):
        asyncio.run(provider.broadcast("after", 1))


def test_without_a_lifespan_the_provider_starts_on_first_use():
    # A test client not used as a context manager runs no lifespan, and gives each
    # websocket a loop of its own: the pages' sessions run on different loops.
    require(REDIS_URL, 6379, "Redis")
    provider = RedisPubSub(url=REDIS_URL, channel_prefix=f"pyview-fanout-test:{uuid.uuid4().hex}:")
    client = TestClient(make_app(provider))
    first, second = Page(client), Page(client)
    first.join()
    second.join()
    first.click("increment")
    assert second.pushed_diff() == {"0": "1"}
    first.close()
    second.close()
    wait_until(lambda: provider.stats()["sessions"] == 0)
    asyncio.run(provider.stop())


def test_a_late_unsubscribe_all_from_an_old_socket_keeps_the_new_sockets_subscriptions():
    # A reconnect joins the page's channel again on a new websocket while the old one is
    # still open; the old socket's close comes after.
    provider = InMemoryPubSub()
    with TestClient(make_app(provider)) as client:
        old = Page(client)
        old.join()
        new = Page(client, topic=old.topic)
        new.token = old.token
        new.join()
        assert provider.stats()["sessions"] == 2
        old.close()
        wait_until(lambda: provider.stats()["sessions"] == 1)
        other = Page(client)
        other.join()
        other.click("increment")
        assert new.pushed_diff() == {"0": "1"}
        new.close()
        other.close()


def test_navigation_leaves_no_session_behind():
    # PyView 0.9 never closes the socket of the LiveView navigated to.
    provider = InMemoryPubSub()
    with TestClient(make_app(provider)) as client:
        page = Page(client)
        page.join()
        page.leave()
        wait_until(lambda: provider.stats()["sessions"] == 0)
        page.join("/again")
        assert provider.stats()["sessions"] == 1
        page.click("increment")
        assert page.pushed_diff() == {"0": "1"}
        page.close()
        wait_until(lambda: provider.stats()["sessions"] == 0)
        assert provider.stats()["subscriptions"] == 0


class UnansweredUnsubscribe(InMemoryPubSub):
    """A provider whose ``unsubscribe_all`` never returns, as over a broker that stopped
    answering."""

    async def unsubscribe_all(self, session_id: str) -> None:
        await asyncio.Event().wait()


def test_closing_a_page_is_bounded_when_unsubscribe_all_hangs():
    provider = UnansweredUnsubscribe()
    with TestClient(make_app(provider, unsubscribe_timeout=0.2)) as client:
        page = Page(client)
        page.join()
        began = time.monotonic()
        page.close()
        took = time.monotonic() - began
        assert took < 2.0, took


async def test_unsubscribes_after_stop_are_harmless():
    hub = FanoutHub(InMemoryPubSub())
    socket = SocketPubSub(hub, "lv:phx-page")
    recorder = Recorder()
    await socket.subscribe_topic_async("room", recorder)
    await hub.stop()
    await socket.unsubscribe_all_async()
    await socket.unsubscribe_topic_async("room")
    await hub.unsubscribe_all_async("never-subscribed")
    with pytest.raises(StoppedError):
        await socket.send_all_on_topic_async("room", 1)


async def test_sockets_on_one_channel_are_separate_sessions():
    provider = InMemoryPubSub()
    hub = FanoutHub(provider)
    old, new = SocketPubSub(hub, "lv:phx-page"), SocketPubSub(hub, "lv:phx-page")
    assert old.session_id != new.session_id
    old_calls, new_calls = Recorder(), Recorder()
    await old.subscribe_topic_async("room", old_calls)
    await new.subscribe_topic_async("room", new_calls)
    await new.send_others_on_topic_async("room", "from new")
    await old.unsubscribe_all_async()
    await old.send_all_on_topic_async("room", "after")
    await eventually(lambda: len(new_calls.calls) == 1)
    assert old_calls.messages == ["from new"]
    assert new_calls.messages == ["after"]
    await hub.stop()


async def test_subscribe_without_a_topic_gets_send_all_and_send_others():
    hub = FanoutHub(InMemoryPubSub())
    first, second = SocketPubSub(hub, "lv:phx-a"), SocketPubSub(hub, "lv:phx-b")
    got: dict[str, list[Any]] = {"first": [], "second": []}

    def handler(name: str) -> Any:
        async def on_message(message: Any) -> None:
            got[name].append(message)

        return on_message

    await first.subscribe_async(handler("first"))
    await second.subscribe_async(handler("second"))
    await first.send_all_async("everyone")
    await first.send_others_async("not first")
    await eventually(lambda: len(got["second"]) == 2)
    assert got == {"first": ["everyone"], "second": ["everyone", "not first"]}
    await second.unsubscribe_async()
    await first.send_all_async("again")
    await eventually(lambda: len(got["first"]) == 2)
    assert got["second"] == ["everyone", "not first"]
    await hub.stop()


async def test_the_sync_forms_run_on_the_loop():
    hub = FanoutHub(InMemoryPubSub())
    socket = SocketPubSub(hub, "lv:phx-page")
    recorder = Recorder()
    socket.subscribe_topic("room", recorder)
    await eventually(lambda: hub.provider.stats()["subscriptions"] == 1)
    socket.send_all_on_topic("room", "sync")
    socket.send_others_on_topic("room", "not to me")
    await eventually(lambda: recorder.calls)
    await asyncio.sleep(0.01)
    assert recorder.messages == ["sync"]
    socket.unsubscribe_all()
    await eventually(lambda: hub.provider.stats()["sessions"] == 0)
    await hub.stop()


def test_a_sync_call_without_a_loop_says_so():
    hub = FanoutHub(InMemoryPubSub())
    with pytest.raises(RuntimeError, match="no event loop"):
        hub.send_all_on_topic("room", 1)


def test_install_refuses_what_is_not_a_provider():
    with pytest.raises(TypeError, match="not a PubSubProvider"):
        FanoutHub(object())  # type: ignore[arg-type]


def test_a_click_reaches_another_instance_through_redis():
    require(REDIS_URL, 6379, "Redis")
    prefix = f"pyview-fanout-test:{uuid.uuid4().hex}:"
    provider = RedisPubSub(url=REDIS_URL, channel_prefix=prefix)

    async def other_instance() -> tuple[RedisPubSub, Recorder]:
        other = RedisPubSub(url=REDIS_URL, channel_prefix=prefix)
        await other.start()
        recorder = Recorder()
        await other.subscribe_topic("elsewhere", counter.TOPIC, recorder)
        return other, recorder

    with TestClient(make_app(provider)) as client:
        other, recorder = client.portal.call(other_instance)
        page = Page(client)
        page.join()
        page.click("increment")
        assert page.pushed_diff() == {"0": "1"}
        wait_until(lambda: recorder.messages == [1])
        client.portal.call(other.broadcast, counter.TOPIC, 41)
        assert page.pushed_diff() == {"0": "41"}
        page.close()
        client.portal.call(other.stop)


def test_pages_keep_working_on_their_instance_while_redis_hangs():
    redis = PrivateRedis()
    provider = RedisPubSub(url=redis.url, response_timeout_ms=300, health_check_interval_ms=100)
    try:
        with TestClient(make_app(provider)) as client:
            first, second = Page(client), Page(client)
            first.join()
            second.join()
            redis.pause()
            # The publisher finds the connection silent within the health check and the
            # response timeout; from then on broadcasts reach this instance only.
            wait_until(lambda: not provider.stats()["broker"]["publisher_connected"])
            first.click("increment")
            assert first.pushed_diff() == {"0": "1"}
            assert second.pushed_diff() == {"0": "1"}
            # A page that joins now is subscribed on this instance, unconfirmed by Redis.
            third = Page(client)
            third.join()
            second.click("increment")
            assert third.pushed_diff() == {"0": "2"}
            began = time.monotonic()
            for page in (first, second, third):
                page.close()
            assert time.monotonic() - began < 2.0
            wait_until(lambda: provider.stats()["sessions"] == 0)
            assert provider.stats()["broker"]["unavailable"] >= 2
    finally:
        redis.close()
