"""Makes an unmodified ``pyview-web`` 0.9 application use a fanout provider.

    from pyview import PyView
    from pyview_fanout import RedisPubSub
    from pyview_fanout.pyview import install

    app = PyView()
    install(app, RedisPubSub(url="redis://127.0.0.1:6379"))

PyView 0.9 has no pub/sub hook: every ``ConnectedLiveViewSocket`` builds its wrapper,
``pyview.live_socket.PubSub(pub_sub_hub, topic)``, from module globals when it is created.
:func:`install` replaces both globals, so it must run before the first connection, and it
serves every PyView application of the process. For the interface PyView's design proposes,
``PyView(pubsub=provider)``, the provider is passed as it is.

What the adapter does for PyView 0.9's sockets:

- **One fanout session per socket.** PyView names a socket's session after its page's
  channel (``lv:phx-<uuid>``), and a reconnect or a navigation to another LiveView reuses it.
  Each socket's wrapper gets an id of its own (the channel and a sequence number), so a late
  ``unsubscribe_all`` from an old socket never removes a newer socket's subscriptions.
- **Sockets PyView never closes.** After a navigation, the connection's last LiveView socket
  is never closed by PyView 0.9. When the connection's first socket is closed again at the
  connection's end, the adapter closes the connection's other sockets that are still open.
- **A bounded unsubscribe.** ``unsubscribe_all`` runs inside the socket's ``close()``; the
  adapter waits for it at most ``unsubscribe_timeout`` seconds, logs and swallows its
  failures, and ignores it after ``stop()``, so a broker that is down cannot hang the
  connection handler nor skip the rest of ``close()``.
- **Lifecycle.** The application's lifespan is wrapped: the provider starts before the
  application's own start-up and stops after its shutdown. Where no lifespan runs (uvicorn's
  ``--lifespan off``, a test client not used as a context manager), the provider starts on
  first use, and is never stopped.
- **A broker that is down** does not break pages: a subscribe the broker did not confirm and
  a broadcast that reached only this instance are logged as warnings (the provider
  re-subscribes when the connection is back); the pages of this instance go on working.
- **The sender receives its own broadcast**, as with PyView's hub: ``broadcast`` goes to every
  subscriber, ``send_others_*`` to all but the socket that sends.
- The whole hub interface PyView 0.9 has, async and sync (the sync calls schedule the work on
  the loop and return at once). Handlers registered with ``subscribe(handler)``, without a
  topic, get ``send_all`` / ``send_others`` messages as ``handler(message)``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from typing import Any

from ._errors import BrokerError, FanoutError
from ._protocol import PubSubProvider

_logger = logging.getLogger("pyview_fanout.pyview")

ALL_TOPIC = "pyview_fanout:all"
"""The topic that carries ``send_all`` / ``send_others`` to ``subscribe(handler)`` handlers."""

# Where a connection's LiveView sockets are listed, in the order they were made, in the
# ASGI scope of their websocket: the list lives exactly as long as the connection.
_SOCKETS_KEY = "pyview_fanout.sockets"


class FanoutHub:
    """PyView 0.9's ``PubSubHub`` interface on a fanout provider. Its ``session_id``
    arguments are fanout session ids: the socket wrappers (:class:`SocketPubSub`) pass their own.
    """

    def __init__(self, provider: PubSubProvider, *, unsubscribe_timeout: float = 2.0) -> None:
        if not isinstance(provider, PubSubProvider):
            raise TypeError(f"{type(provider).__name__} is not a PubSubProvider")
        if not unsubscribe_timeout > 0:
            raise ValueError(f"unsubscribe_timeout is {unsubscribe_timeout!r}; it must be positive")
        self.provider = provider
        self.unsubscribe_timeout = unsubscribe_timeout
        self._started = False
        self._stopped = False
        self._starting: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Tasks of the sync calls, held until they end.
        self._tasks: set[asyncio.Future[Any]] = set()
        self._sequence = itertools.count(1)

    def session_id_for(self, socket_topic: str) -> str:
        """A fanout session id of its own for a socket on the channel ``socket_topic``."""
        return f"{socket_topic}#{next(self._sequence)}"

    async def start(self) -> None:
        """Starts the provider (the wrapped lifespan calls it)."""
        self._loop = asyncio.get_running_loop()
        await self.provider.start()
        self._started = True

    async def stop(self) -> None:
        """Stops the provider; later unsubscribes do nothing."""
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()
        await self.provider.stop()

    async def _ready(self) -> None:
        if self._started or self._stopped:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if not self._started:
                _logger.info("starting the pub/sub provider on first use: no lifespan started it")
                await self.start()

    # Subscriptions.

    async def subscribe_topic_async(self, session_id: str, topic: str, handler: Callable[..., Any]) -> None:
        await self._ready()
        try:
            await self.provider.subscribe_topic(session_id, topic, handler)
        except BrokerError as error:
            # The session is subscribed on this instance, and the provider subscribes at the
            # broker once its connection is back: the page works, on this instance only.
            _logger.warning("subscribe of session %r to %r: %s", session_id, topic, error)

    async def subscribe_async(self, session_id: str, handler: Callable[[Any], Any]) -> None:
        async def on_message(_topic: str, message: Any) -> None:
            await handler(message)

        await self.subscribe_topic_async(session_id, ALL_TOPIC, on_message)

    async def unsubscribe_topic_async(self, session_id: str, topic: str) -> None:
        await self._bounded(self.provider.unsubscribe_topic(session_id, topic), session_id)

    async def unsubscribe_async(self, session_id: str) -> None:
        await self.unsubscribe_topic_async(session_id, ALL_TOPIC)

    async def unsubscribe_all_async(self, session_id: str) -> None:
        await self._bounded(self.provider.unsubscribe_all(session_id), session_id)

    async def _bounded(self, call: Coroutine[Any, Any, None], session_id: str) -> None:
        """Runs an unsubscribe for at most ``unsubscribe_timeout``; it never raises."""
        if self._stopped or not self._started:
            # Nothing is subscribed before the start, and stop() ended every session.
            call.close()
            return
        try:
            await asyncio.wait_for(call, self.unsubscribe_timeout)
        except TimeoutError:
            _logger.warning(
                "unsubscribe of session %r took over %s s; left to the provider", session_id, self.unsubscribe_timeout
            )
        except FanoutError as error:
            _logger.warning("unsubscribe of session %r failed: %s", session_id, error)

    # Broadcasts.

    async def send_all_on_topic_async(self, topic: str, message: Any) -> None:
        await self._ready()
        await self._local_at_least(self.provider.broadcast(topic, message), topic)

    async def send_others_on_topic_async(self, except_session_id: str, topic: str, message: Any) -> None:
        await self._ready()
        broadcast_from = getattr(self.provider, "broadcast_from", None)
        if broadcast_from is None:
            raise TypeError(f"{type(self.provider).__name__} has no broadcast_from: it cannot send to others only")
        await self._local_at_least(broadcast_from(except_session_id, topic, message), topic)

    async def _local_at_least(self, broadcast: Coroutine[Any, Any, None], topic: str) -> None:
        """Runs a broadcast; a broker that is down is logged, not raised: the message reached
        this instance's sessions, and an event handler that raised would end the page's
        connection."""
        try:
            await broadcast
        except BrokerError as error:
            _logger.warning("broadcast on %r: %s", topic, error)

    async def send_all_async(self, message: Any) -> None:
        await self.send_all_on_topic_async(ALL_TOPIC, message)

    async def send_others_async(self, except_session_id: str, message: Any) -> None:
        await self.send_others_on_topic_async(except_session_id, ALL_TOPIC, message)

    # The sync forms: scheduled on the running loop (or, from another thread, on the loop the
    # provider started on), returning at once; a failure is logged.

    def _schedule(self, call: Coroutine[Any, Any, None]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            task: asyncio.Future[Any] = loop.create_task(call)
        elif self._loop is not None and not self._loop.is_closed():
            task = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, self._loop), loop=self._loop)
        else:
            call.close()
            raise RuntimeError("no event loop runs the pub/sub provider: call the async form from a loop")
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _logger.error("a pub/sub call failed", exc_info=task.exception())

    def send_all(self, message: Any) -> None:
        self._schedule(self.send_all_async(message))

    def send_all_on_topic(self, topic: str, message: Any) -> None:
        self._schedule(self.send_all_on_topic_async(topic, message))

    def send_others(self, except_session_id: str, message: Any) -> None:
        self._schedule(self.send_others_async(except_session_id, message))

    def send_others_on_topic(self, except_session_id: str, topic: str, message: Any) -> None:
        self._schedule(self.send_others_on_topic_async(except_session_id, topic, message))

    def subscribe(self, session_id: str, handler: Callable[[Any], Any]) -> None:
        self._schedule(self.subscribe_async(session_id, handler))

    def subscribe_topic(self, session_id: str, topic: str, handler: Callable[..., Any]) -> None:
        self._schedule(self.subscribe_topic_async(session_id, topic, handler))

    def unsubscribe(self, session_id: str) -> None:
        self._schedule(self.unsubscribe_async(session_id))

    def unsubscribe_topic(self, session_id: str, topic: str) -> None:
        self._schedule(self.unsubscribe_topic_async(session_id, topic))

    def unsubscribe_all(self, session_id: str) -> None:
        self._schedule(self.unsubscribe_all_async(session_id))


class SocketPubSub:
    """PyView 0.9's per-socket ``PubSub`` wrapper, built as ``PubSub(pub_sub_hub, topic)``,
    acting for a fanout session of its own (:meth:`FanoutHub.session_id_for`)."""

    def __init__(self, hub: FanoutHub, topic: str) -> None:
        self.hub = hub
        self.session_id = hub.session_id_for(topic)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        # Every hub method that takes a session id, bound to this socket's.
        if name.startswith("_") or name not in _SESSION_METHODS:
            raise AttributeError(name)
        method = getattr(self.hub, name)

        def bound(*args: Any) -> Any:
            return method(self.session_id, *args)

        bound.__name__ = name
        return bound

    async def send_all_on_topic_async(self, topic: str, message: Any) -> None:
        await self.hub.send_all_on_topic_async(topic, message)

    async def send_all_async(self, message: Any) -> None:
        await self.hub.send_all_async(message)

    def send_all_on_topic(self, topic: str, message: Any) -> None:
        self.hub.send_all_on_topic(topic, message)

    def send_all(self, message: Any) -> None:
        self.hub.send_all(message)


# The hub methods whose first argument is the session id.
_SESSION_METHODS = frozenset(
    {
        "send_others",
        "send_others_async",
        "send_others_on_topic",
        "send_others_on_topic_async",
        "subscribe",
        "subscribe_async",
        "subscribe_topic",
        "subscribe_topic_async",
        "unsubscribe",
        "unsubscribe_async",
        "unsubscribe_topic",
        "unsubscribe_topic_async",
        "unsubscribe_all",
        "unsubscribe_all_async",
    }
)


def install(app: Any, provider: PubSubProvider, *, unsubscribe_timeout: float = 2.0) -> FanoutHub:
    """Makes PyView 0.9 use ``provider``, for ``app`` and every other PyView app in the process.

    Call it before the first connection. Wraps ``app``'s lifespan to start and stop the
    provider. Returns the hub that replaces ``pyview.live_socket.pub_sub_hub``.
    """
    from pyview import live_socket  # noqa: PLC0415 (pyview is needed only here)

    missing = [name for name in ("pub_sub_hub", "PubSub", "ConnectedLiveViewSocket") if not hasattr(live_socket, name)]
    if missing:
        raise RuntimeError(f"pyview.live_socket has no {', '.join(missing)}: this adapter is for pyview-web 0.9")
    hub = FanoutHub(provider, unsubscribe_timeout=unsubscribe_timeout)
    live_socket.pub_sub_hub = hub
    live_socket.PubSub = SocketPubSub
    _track_sockets(live_socket.ConnectedLiveViewSocket)
    _wrap_lifespan(app, hub)
    return hub


def _wrap_lifespan(app: Any, hub: FanoutHub) -> None:
    router = getattr(app, "router", None)
    inner = getattr(router, "lifespan_context", None)
    if inner is None:
        raise TypeError(f"{type(app).__name__} has no router.lifespan_context: install() takes a Starlette app")

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        await hub.start()
        try:
            async with inner(app) as state:
                yield state
        finally:
            await hub.stop()

    router.lifespan_context = lifespan


def _track_sockets(socket_class: type) -> None:
    """Lists each connection's sockets, and closes the ones PyView leaves open at its end."""
    if getattr(socket_class, "_pyview_fanout_tracked", False):
        return
    original_init = socket_class.__init__
    original_close = socket_class.close

    def __init__(self: Any, websocket: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, websocket, *args, **kwargs)
        websocket.scope.setdefault(_SOCKETS_KEY, []).append(self)

    async def close(self: Any) -> None:
        # PyView 0.9 closes a connection's first socket at the connection's end, and also
        # on a navigation away from it; a second close of it is the end.
        was_open = self.connected
        try:
            await original_close(self)
        finally:
            sockets: list[Any] = self.websocket.scope.get(_SOCKETS_KEY, [])
            if sockets and sockets[0] is self and not was_open:
                for other in sockets[1:]:
                    if other.connected:
                        with suppress(Exception):
                            await original_close(other)
                sockets.clear()

    socket_class.__init__ = __init__
    socket_class.close = close
    socket_class._pyview_fanout_tracked = True
