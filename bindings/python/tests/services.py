"""The machine's services the distributed tests use: where they are and whether they answer."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
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


class PrivateRedis:
    """A redis-server of a test's own on a free loopback port, which the test may pause
    (SIGSTOP: connections stay open and nothing answers, as with a hung broker) and resume.
    ``close()`` ends it whatever its state."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            reason = "redis-server is not installed"
            if os.environ.get("FANOUT_REQUIRE_SERVICES") == "1":
                pytest.fail(f"{reason}, and FANOUT_REQUIRE_SERVICES=1")
            print(f"skipping: {reason}")
            pytest.skip(reason)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the private redis-server did not start"
                time.sleep(0.02)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.resume()
        self.process.terminate()
        self.process.wait(timeout=10)
