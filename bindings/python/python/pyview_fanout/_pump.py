"""The pumps: one per asyncio loop, running the handlers of that loop's sessions.

Each session has one bounded mailbox in the engine, for all its topics. The sessions of one
loop share that loop's pump (``_core.Pump``): when a mailbox gains a message, its session is
queued on the pump, and the pump takes the session's messages one at a time, in order, and
runs the handler of each before it takes the next (G4). A full mailbox is the configured
policy's to handle, so a stalled handler holds at most ``capacity`` messages (G7).

A handler's first step runs inside the pump, called from native code: a handler that returns
without awaiting anything not ready costs no task of its own. One that does await keeps the
task it started in, which was the pump's, for the rest of its run; a new task takes the pump
over, so other sessions go on (G5) while that session's next message waits for the handler.
A handler therefore runs in one task from start to end: ``asyncio.current_task()``,
``asyncio.timeout`` and cancellation act on it. It runs in its session's context, a copy of
the context of the session's first subscribe, as in a task made there: a context variable a
handler sets is seen by the session's later handlers and by no other session's.

A distributed provider's messages arrive as bytes and are decoded by the pump, once per
recipient (``_codec``); in memory they are the broadcast objects themselves.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from . import _core

if TYPE_CHECKING:
    from ._provider import Provider

_logger = logging.getLogger("pyview_fanout")

# How many turns of the loop an idle pump looks for ready sessions before it parks.
_IDLE_TURNS = 2


class _Pump:
    """One loop's pump for one provider, and the tasks of its handlers that awaited."""

    def __init__(self, provider: Provider, loop: asyncio.AbstractEventLoop, decode: Callable[[bytes], Any] | None) -> None:
        self.provider = provider
        self.loop = loop
        self.core = _core.Pump(loop, decode)
        # The sessions on this pump, by their core's key.
        self.sessions: dict[int, _Session] = {}
        # Tasks running a handler that awaited.
        self.handler_tasks: set[asyncio.Task[None]] = set()
        # Set once the pump's task ended other than by `stop`: its sessions are ended too.
        self.abandoned = False
        self.start()

    def start(self) -> None:
        """Starts a task that steps the pump. Never eager (a loop's eager task factory would
        run it inside the step that hands a handler over), and in a context of its own: each
        handler runs in its session's."""
        self.task: asyncio.Task[None] = asyncio.Task(
            self._run(), loop=self.loop, name="pyview_fanout pump", context=contextvars.Context()
        )
        self.task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task is not self.task or self.core.stopped:
            return
        if task.cancelled() and self._loop_goes_on(task):
            # Cancelled by hand (a handler that returned at once saw the pump's task as its
            # own): the pump goes on in a new task.
            self.start()
        elif task.cancelled() or task.exception() is not None:
            # Its loop shutting down, or KeyboardInterrupt or SystemExit from a handler: no
            # task steps the pump any more, so its sessions end, as their own tasks' ends
            # would have ended them.
            self.abandon()

    def _loop_goes_on(self, task: asyncio.Task[None]) -> bool:
        """Whether the loop runs on: some other task of it is neither done nor being
        cancelled (a loop shutting down cancels all of its tasks)."""
        if self.loop.is_closed():
            return False
        return any(
            other is not task and not other.done() and not other.cancelling()
            for other in asyncio.all_tasks(self.loop)
        )

    async def _run(self) -> None:
        step = self.core.step
        # Turns of the loop in a row that found no session ready; past _IDLE_TURNS the pump
        # parks on a future, which costs more than a turn when a broadcast follows at once.
        idle = 0
        while True:
            outcome = step(self, idle >= _IDLE_TURNS)
            if outcome is None:
                return
            if outcome is True:
                idle = 0
                await asyncio.sleep(0)
            elif outcome is False:
                idle += 1
                await asyncio.sleep(0)
            elif type(outcome) is tuple:
                # A handler awaited: this task goes on with it; a new one with the pump.
                self.start()
                await self._finish(*outcome)
                return
            else:
                idle = 0
                await outcome

    def abandon(self) -> None:
        """Stops the pump and ends its sessions: their handlers no longer run."""
        self.abandoned = True
        self.core.stop()
        sessions = list(self.sessions.values())
        self.sessions.clear()
        for session in sessions:
            # Closed; the engine forgets it with its last reference.
            try:
                self.provider._end(session)
            except Exception:
                _logger.exception("cannot end session %r of a pump that ended", session.core.id)

    async def _finish(self, key: int, topic: str, iterator: Any, yielded: Any) -> None:
        """Runs the rest of session ``key``'s handler for ``topic``, then hands the session
        back to the pump."""
        session = self.sessions[key]
        task = asyncio.current_task()
        assert task is not None
        session.task = task
        session.handling = True
        self.handler_tasks.add(task)
        if session.core.closed and not self.provider._core.stopped:
            # Ended while its handler's first step ran: the close grace starts now. (A stop
            # bounds its handlers by the stop grace, and may be what this handler runs.)
            self.provider._end(session)
        try:
            await _Resumed(iterator, yielded, session.core.context)
        except asyncio.CancelledError:
            if task.cancelling():
                # Cancelled by a grace running out; its session is closed. The task returns
                # rather than re-raise, so that no traceback keeps the handler's frame, and
                # with it the message, alive in the finished task.
                self.provider._handlers_cancelled += 1
            else:
                self._failed(key, topic, None, False)
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException:
            self._failed(key, topic, None, False)
        finally:
            session.handling = False
            session.task = None
            self.handler_tasks.discard(task)
            session.core.release()

    def _failed(self, key: int, topic: str, error: BaseException | None, decoding: bool) -> None:
        """A handler raised (``error``, or the exception being handled), or a message did not
        decode (G9: skipped). Counted and logged; the session goes on."""
        session = self.sessions.get(key)
        session_id = session.core.id if session is not None else None
        exc_info: BaseException | bool = error if error is not None else True
        if decoding:
            self.provider._decode_errors += 1
            _logger.error("cannot decode a message on topic %r for session %r", topic, session_id, exc_info=exc_info)
        else:
            self.provider._handler_errors += 1
            _logger.error("handler for topic %r of session %r raised", topic, session_id, exc_info=exc_info)

    def _ended(self, key: int) -> None:
        """Session ``key`` is closed and the pump has seen its end."""
        session = self.sessions.pop(key, None)
        if session is not None:
            if session.grace_timer is not None:
                session.grace_timer.cancel()
            self.provider._session_ended(session)

    def live(self) -> int:
        """Sessions and handler tasks this pump still has."""
        return len(self.sessions) + len(self.handler_tasks)

    async def wind_down(self, grace: float, caller: asyncio.Task[Any] | None) -> None:
        """Waits up to ``grace`` for the handlers running on this pump's loop but ``caller``
        (called there, so no handler is in its first step), cancels those still running and
        waits as long again for them to unwind."""
        tasks = [task for task in self.handler_tasks if task is not caller and not task.done()]
        if not tasks:
            return
        _, running = await asyncio.wait(tasks, timeout=grace)
        if running:
            _logger.warning("stop: cancelling %d handlers still running after the stop grace", len(running))
            for task in running:
                task.cancel()
            await asyncio.wait(running, timeout=grace)


class _Resumed:
    """A handler's awaitable whose first step yielded ``yielded``: awaiting it goes on as
    ``await`` would have, from that point, in the session's context."""

    __slots__ = ("context", "iterator", "yielded")

    def __init__(self, iterator: Any, yielded: Any, context: contextvars.Context) -> None:
        self.iterator = iterator
        self.yielded = yielded
        self.context = context

    def __await__(self) -> Generator[Any, Any, Any]:
        return _resume(self.iterator, self.yielded, self.context)


def _resume(iterator: Any, yielded: Any, context: contextvars.Context) -> Generator[Any, Any, Any]:
    """Hands ``yielded`` to the task, then each value the task sends (or exception it throws)
    to ``iterator``, run in ``context``, and each value ``iterator`` yields to the task, until
    it returns: ``yield from``'s rules, an iterator without ``send`` or ``throw`` included."""
    run = context.run
    send = getattr(iterator, "send", None)
    while True:
        thrown: BaseException | None = None
        try:
            sent = yield yielded
        except GeneratorExit:
            close = getattr(iterator, "close", None)
            if close is not None:
                run(close)
            raise
        except BaseException as error:
            thrown = error
        try:
            if thrown is not None:
                throw = getattr(iterator, "throw", None)
                if throw is None:
                    raise thrown
                yielded = run(throw, thrown)
            elif send is not None:
                yielded = run(send, sent)
            else:
                yielded = run(next, iterator)
        except StopIteration as done:
            return done.value
        finally:
            thrown = None


class _Session:
    """A session's handlers, as the provider and its pump hold them."""

    __slots__ = ("core", "grace_timer", "handling", "loop", "pump", "task")

    def __init__(self, provider: Provider, pump: _Pump, session_id: str) -> None:
        self.pump = pump
        self.loop = pump.loop
        # Its handlers by topic are the core's (`set_handler`, `remove_handler`); they run in
        # a copy of this context, as they would in a task made here.
        self.core: _core.Session = provider._core.open_session(session_id, pump.core, contextvars.copy_context())
        pump.sessions[self.core.key] = self
        # The task running a handler of the session that awaited; written by the pump.
        self.task: asyncio.Task[None] | None = None
        self.handling = False
        self.grace_timer: asyncio.TimerHandle | None = None

    def arm_grace(self, grace: float) -> None:
        """Cancels the running handler if it still runs ``grace`` seconds from now."""
        if grace == 0:
            self._cancel_handler()
        elif self.grace_timer is None:
            self.grace_timer = self.loop.call_later(grace, self._cancel_handler)

    def _cancel_handler(self) -> None:
        if self.handling and self.task is not None:
            self.task.cancel()
