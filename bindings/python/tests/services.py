"""The machine's services the distributed tests use: where they are and whether they answer."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379"
DATABASE_URL = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/test"


def require(url: str, default_port: int, name: str) -> None:
    """Skips the test, saying why, if nothing answers at ``url``; fails instead when
    ``FANOUT_REQUIRE_SERVICES=1`` (CI, which starts the services)."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or default_port
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as error:
        reason = f"{name} is not reachable at {host}:{port} ({error})"
        if os.environ.get("FANOUT_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason}, and FANOUT_REQUIRE_SERVICES=1")
        print(f"skipping: {reason}")
        pytest.skip(reason)
