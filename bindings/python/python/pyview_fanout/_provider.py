"""The design's provider operations, over a native provider, for every provider class.

Sessions live in the engine (``_core``); their handlers run on the pump of the loop that first
subscribed them (``_pump``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Any

from . import _core
from ._codec import Codec, PayloadCodec
from ._config import engine_settings
from ._errors import BrokerError
from ._protocol import TopicHandler
from ._pump import _Pump, _Session



class Provider:
    """The design's ``PubSubProvider`` operations over a native provider (``_core.Provider``).

    Subclasses build ``_core`` and set ``_encode`` / ``_decode`` when messages travel as bytes.
    """

    _core: _core.Provider
    # Turns a broadcast message into the bytes a distributed provider carries; None in memory.
    _encode: Callable[[Any], bytes] | None = None
    # Turns received bytes back into a message; None in memory.
    _decode: Callable[[bytes], Any] | None = None

    def _init_sessions(self) -> None:
        self._sessions: dict[str, _Session] = {}
        # One pump per loop that subscribed sessions.
        self._pumps: dict[asyncio.AbstractEventLoop, _Pump] = {}
        self._handler_errors = 0
        self._handlers_cancelled = 0
        self._decode_errors = 0
        # Per loop with sessions, the task that finds sessions the engine closed while their
        # handler runs (see `_watch_closed`).
        self._watchers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}

    def _init_distributed(
        self,
        native: Callable[[dict[str, Any], dict[str, Any], str | None], _core.Provider],
        broker_keys: type,
        codec: Codec | None,
        config: str | os.PathLike[str] | None,
        settings: Mapping[str, Any],
    ) -> None:
        """Sets up a distributed provider: ``native`` builds it from the broker's settings
        (the keys of the TypedDict ``broker_keys``), the engine's (the other keys, or the
        config file) and the payloads' codec."""
        payloads = PayloadCodec(codec)
        broker = {key: value for key, value in settings.items() if key in broker_keys.__annotations__}
        engine = {key: value for key, value in settings.items() if key not in broker}
        path, table = engine_settings(config, engine)
        self._core = native(broker, table, path)
        self._encode = payloads.encode
        self._decode = payloads.decode
        self._init_sessions()

    async def subscribe_topic(self, session_id: str, topic: str, handler: TopicHandler) -> None:
        """Subscribes the session to ``topic``; its messages go to ``handler(topic, message)``.

        Subscribing again replaces the handler; it stays one subscription (G3). The session's
        handlers run on the loop of its first subscribe. On a distributed provider, returns
        once the broker has confirmed the topic's channel; if it did not (the connection is
        down), raises ``BrokerError`` and the subscription stands on this instance, confirmed
        by the provider once the connection is back.
        """
        if not callable(handler):
            raise TypeError(f"the handler must be an async callable (topic, message), not {type(handler).__name__}")
        session = self._sessions.get(session_id)
        if session is not None and (session.core.closed or session.pump.abandoned or session.loop.is_closed()):
            # Disconnected as a slow consumer, and its pump has not seen it yet; or its
            # loop's pump is gone (the loop ended).
            self._end(session)
            session = None
        created = session is None
        if session is None:
            self._start_lazily()
            session = self._open(session_id)
        # The handler goes in first: a broadcast that finds the subscription finds it.
        previous = session.core.set_handler(topic, handler)
        unconfirmed: BrokerError | None = None
        try:
            pending = session.core.subscribe(topic)
            if pending is not None:
                await pending
        except BrokerError as error:
            # The broker did not confirm the channel, but the session is subscribed on this
            # instance and the provider subscribes at the broker once it is back: it is kept,
            # and the caller told.
            unconfirmed = error
        except BaseException:
            if previous is None:
                session.core.remove_handler(topic)
            else:
                session.core.set_handler(topic, previous)
            if created:
                session.core.close()
            raise
        if created:
            self._sessions[session_id] = session
            if session.loop not in self._watchers:
                watcher = session.loop.create_task(self._watch_closed(session.loop), name="pyview_fanout watcher")
                self._watchers[session.loop] = watcher
        if unconfirmed is not None:
            raise unconfirmed

    async def _watch_closed(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bounds the handlers of sessions the engine closed on its own (a ``disconnect``
        policy's slow consumer) while the handler ran: its pump learns of the close only when
        the handler returns. Every half close grace (at most 1 s, at least 10 ms) it ends such
        sessions, which arms their grace, so a stalled handler is cancelled at most that
        interval later than the grace counted from the close (G7). Runs while the loop has
        sessions."""
        interval = min(max(self._core.close_grace / 2, 0.01), 1.0)
        try:
            while True:
                await asyncio.sleep(interval)
                sessions = [session for session in list(self._sessions.values()) if session.loop is loop]
                if not sessions:
                    return
                for session in sessions:
                    if session.handling and session.core.closed:
                        self._end(session)
        finally:
            # Closed by the collector, with no loop running, its entry goes with the provider.
            if loop.is_running() and self._watchers.get(loop) is asyncio.current_task():
                del self._watchers[loop]

    async def unsubscribe_topic(self, session_id: str, topic: str) -> None:
        """Removes one subscription; the session ends with its last (G2, G3)."""
        pending = self._core.unsubscribe_topic(session_id, topic)
        if pending is not None:
            await pending
        session = self._sessions.get(session_id)
        if session is not None and session.core.remove_handler(topic) is not None and not session.core.handler_count:
            self._end(session)

    async def unsubscribe_all(self, session_id: str) -> None:
        """Ends the session: once this returns, none of its handlers starts again, and its
        queued messages are discarded and counted (G2). A handler still running goes on for
        up to ``close_grace_ms``, then is cancelled."""
        pending = self._core.unsubscribe_all(session_id)
        if pending is not None:
            await pending
        session = self._sessions.get(session_id)
        if session is not None:
            self._end(session)

    async def broadcast(self, topic: str, message: Any) -> None:
        """Delivers ``message`` to every subscriber of ``topic`` (G1). Returns once every
        recipient's mailbox has taken it or its policy has decided (a ``block`` policy waits)."""
        if self._encode is not None:
            message = self._encode(message)
        pending = self._core.broadcast(topic, message)
        if pending is not None:
            await pending

    async def broadcast_from(self, session_id: str, topic: str, message: Any) -> None:
        """As ``broadcast``, skipping the session ``session_id``."""
        if self._encode is not None:
            message = self._encode(message)
        pending = self._core.broadcast_from(session_id, topic, message)
        if pending is not None:
            await pending

    async def broadcast_acknowledged(self, topic: str, message: Any) -> None:
        """As ``broadcast``, but a distributed provider returns once the broker answered the
        publish, and raises ``BrokerError`` if it refused it, did not answer within the
        response timeout, or the connection was lost (local sessions have the message either
        way). In one process it is ``broadcast``."""
        if self._encode is not None:
            message = self._encode(message)
        pending = self._core.broadcast_acknowledged(topic, message)
        if pending is not None:
            await pending

    async def broadcast_from_acknowledged(self, session_id: str, topic: str, message: Any) -> None:
        """As ``broadcast_from``, acknowledged as ``broadcast_acknowledged`` is."""
        if self._encode is not None:
            message = self._encode(message)
        pending = self._core.broadcast_from_acknowledged(session_id, topic, message)
        if pending is not None:
            await pending

    async def start(self) -> None:
        """Starts the provider's background task; raises ``StoppedError`` after ``stop``."""
        pending = self._core.start()
        if pending is not None:
            await pending

    async def stop(self) -> None:
        """Closes every session (queued messages are discarded and counted), waits up to
        ``stop_grace_ms`` for handlers still running, on this loop and on the other loops that
        subscribed sessions, cancels the rest, and waits as long again for them to unwind.
        Idempotent; later operations raise ``StoppedError``."""
        pending = self._core.stop()
        self._sessions.clear()
        if pending is not None:
            await pending
        loop = asyncio.get_running_loop()
        caller = asyncio.current_task()
        for watcher_loop, watcher in list(self._watchers.items()):
            if watcher_loop is loop:
                watcher.cancel()
            elif not watcher_loop.is_closed():
                watcher_loop.call_soon_threadsafe(watcher.cancel)
        grace = self._core.stop_grace
        waits: list[asyncio.Future[None]] = []
        pumps = list(self._pumps.values())
        try:
            for pump in pumps:
                # Each loop's handlers are awaited and cancelled on that loop, and listed
                # there, once no handler there is in its first step.
                if pump.loop is loop:
                    waits.append(asyncio.ensure_future(pump.wind_down(grace, caller)))
                elif pump.loop.is_running():
                    done = asyncio.run_coroutine_threadsafe(pump.wind_down(grace, caller), pump.loop)
                    waits.append(asyncio.wrap_future(done))
            if waits:
                # Bounded: another loop may stop before it runs its part.
                _, late = await asyncio.wait(waits, timeout=2 * grace + 1.0)
                for wait in late:
                    wait.cancel()
        finally:
            # Also when this call is cancelled: no pump outlives the stop.
            for pump in pumps:
                pump.core.stop()
            self._pumps.clear()

    def stats(self) -> dict[str, Any]:
        """The provider's counters: messages published, deliveries, drops by reason, handler
        errors and cancellations, live sessions, topics and subscriptions."""
        stats: dict[str, Any] = self._core.stats()
        stats["handler_errors"] = self._handler_errors
        stats["handlers_cancelled"] = self._handlers_cancelled
        if self._decode is not None:
            stats["decode_errors"] = self._decode_errors
        return stats

    def session_stats(self, session_id: str) -> dict[str, int] | None:
        """``queued``, ``capacity`` and ``topics`` of a live session, or ``None``."""
        stats: dict[str, int] | None = self._core.session_stats(session_id)
        return stats

    def _start_lazily(self) -> None:
        """Called before a session is opened; a provider that must be started first does
        nothing here, and the engine refuses the subscribe."""

    def _end(self, session: _Session) -> None:
        """Forgets a session that is closed or being closed, and bounds its running handler."""
        if self._sessions.get(session.core.id) is session:
            del self._sessions[session.core.id]
        session.core.close()
        if session.handling and not session.loop.is_closed():
            try:
                running_here = asyncio.get_running_loop() is session.loop
            except RuntimeError:
                running_here = False
            if running_here:
                session.arm_grace(self._core.close_grace)
            else:
                try:
                    session.loop.call_soon_threadsafe(session.arm_grace, self._core.close_grace)
                except RuntimeError:
                    pass  # its loop closed meanwhile, and the handler with it

    def _open(self, session_id: str) -> _Session:
        """Opens session ``session_id`` on the running loop's pump, which is made with the
        loop's first session."""
        loop = asyncio.get_running_loop()
        pump = self._pumps.get(loop)
        if pump is not None and pump.abandoned:
            pump = None
        made = pump is None
        if pump is None:
            for other in list(self._pumps.values()):
                if other.loop.is_closed():
                    other.abandon()
                    del self._pumps[other.loop]
            pump = _Pump(self, loop, self._decode)
        try:
            session = _Session(self, pump, session_id)
        except BaseException:
            if made:
                pump.core.stop()
            raise
        if made:
            self._pumps[loop] = pump
        return session

    def _session_ended(self, session: _Session) -> None:
        """Its pump saw ``session`` end."""
        if self._sessions.get(session.core.id) is session:
            del self._sessions[session.core.id]

    def _live(self) -> int:
        """Sessions and running handlers the pumps still have (for tests)."""
        return sum(pump.live() for pump in list(self._pumps.values()))
