"""A PyView page as a test drives it over Starlette's test client: the page's HTML, then the
LiveView channel on a websocket, speaking Phoenix's message format."""

from __future__ import annotations

import json
import re
from contextlib import AbstractContextManager
from typing import Any

from starlette.testclient import TestClient, WebSocketTestSession


class Page:
    """One loaded page (``GET path``), whose LiveView joins on a websocket of its own."""

    def __init__(self, client: TestClient, path: str = "/", *, topic: str | None = None) -> None:
        html = client.get(path).text
        page_id = re.search(r'id="phx-([^"]+)"', html)
        token = re.search(r'name="csrf-token" content="([^"]+)"', html)
        assert page_id and token, html
        self.path = path
        # A reconnect reuses the page's channel; a test passes another page's topic for that.
        self.topic = topic or f"lv:phx-{page_id[1]}"
        self.token = token[1]
        self._refs = 0
        self._connection: AbstractContextManager[WebSocketTestSession] = client.websocket_connect("/live/websocket")
        self.websocket = self._connection.__enter__()

    def send(self, event: str, payload: dict[str, Any], topic: str | None = None) -> str:
        self._refs += 1
        ref = str(self._refs)
        self.websocket.send_text(json.dumps([ref, ref, topic or self.topic, event, payload]))
        return ref

    def receive(self) -> list[Any]:
        message: list[Any] = self.websocket.receive_json()
        return message

    def join(self, path: str | None = None) -> dict[str, Any]:
        """Joins the LiveView at ``path`` (default: the page's); returns its first render."""
        url = f"http://testserver{path or self.path}"
        ref = self.send("phx_join", {"url": url, "params": {"_csrf_token": self.token}})
        reply = self.receive()
        assert reply[1] == ref and reply[3] == "phx_reply" and reply[4]["status"] == "ok", reply
        rendered: dict[str, Any] = reply[4]["response"]["rendered"]
        return rendered

    def leave(self) -> None:
        ref = self.send("phx_leave", {})
        reply = self.receive()
        assert reply[1] == ref and reply[4]["status"] == "ok", reply

    def click(self, event: str) -> dict[str, Any]:
        """Sends a click; returns the diff of the reply."""
        ref = self.send("event", {"type": "click", "event": event, "value": {}})
        reply = self.receive()
        assert reply[1] == ref and reply[3] == "phx_reply", reply
        diff: dict[str, Any] = reply[4]["response"]["diff"]
        return diff

    def pushed_diff(self) -> dict[str, Any]:
        """The next diff the server pushes (a ``handle_info`` render)."""
        message = self.receive()
        assert message[3] == "diff", message
        diff: dict[str, Any] = message[4]
        return diff

    def close(self) -> None:
        self._connection.__exit__(None, None, None)


def values(diff: Any) -> list[Any]:
    """Every leaf value of a rendered tree or diff."""
    if isinstance(diff, dict):
        return [leaf for value in diff.values() for leaf in values(value)]
    if isinstance(diff, list):
        return [leaf for value in diff for leaf in values(value)]
    return [diff]
