"""``SharedCounter``: a LiveView whose count every page shares through the pub/sub provider.

A click increments the process's count and broadcasts the new value on ``counter``; every
subscribed page, the clicking one included (it receives its own broadcast), shows the value
it is given. A process that receives a value from another process takes it as its own count,
so the count is shared across processes too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pyview import LiveView, PyView, is_connected
from pyview.events import InfoEvent
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.staticfiles import StaticFiles

from pyview_fanout import PubSubProvider
from pyview_fanout.pyview import install

TOPIC = "counter"


@dataclass
class Count:
    """The process's count: the last value broadcast or received."""

    value: int = 0


COUNT = Count()


@dataclass
class CounterContext:
    count: int
    # The server process, shown so that pages of different processes tell themselves apart.
    process: int


class SharedCounter(LiveView[CounterContext]):
    async def mount(self, socket: Any, session: dict[str, Any]) -> None:
        socket.context = CounterContext(count=COUNT.value, process=os.getpid())
        if is_connected(socket):
            await socket.subscribe(TOPIC)

    async def handle_event(self, event: str, payload: Any, socket: Any) -> None:
        if event == "increment":
            COUNT.value += 1
            await socket.broadcast(TOPIC, COUNT.value)

    async def handle_info(self, event: InfoEvent, socket: Any) -> None:
        if event.name == TOPIC:
            COUNT.value = max(COUNT.value, event.payload)
            socket.context.count = event.payload


def make_app(provider: PubSubProvider, **install_options: Any) -> PyView:
    """The counter at ``/`` and again at ``/again`` (a second LiveView route, for navigation),
    using ``provider`` (``install_options`` go to ``install``); ``/stats`` is the provider's
    ``stats()`` as JSON, for tests that watch the server from outside."""

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(provider.stats())  # type: ignore[attr-defined]

    app = PyView()
    app.mount("/static", StaticFiles(packages=[("pyview", "static")]), name="static")
    app.add_route("/stats", stats)
    app.add_live_view("/", SharedCounter)
    app.add_live_view("/again", SharedCounter)
    install(app, provider, **install_options)
    return app
