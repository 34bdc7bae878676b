"""The counter app (``app/``) under uvicorn on loopback, in headless Chromium driven by
playwright: a click on one page updates another, in one process and across two processes
sharing Redis. Each page's screenshot is saved under the workspace's ``target/pyview-browser/``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services import REDIS_URL, require

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TESTS = Path(__file__).resolve().parent
ARTIFACTS = TESTS.parents[2] / "target" / "pyview-browser"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_http(url: str, server: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise AssertionError(f"uvicorn exited with {server.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer within {timeout} s")
        time.sleep(0.1)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Starts the counter app under uvicorn on a loopback port; returns its URL. Each server
    is stopped at the end of the test by SIGTERM, and must have run its lifespan's shutdown
    (which stops the provider)."""
    servers: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(**env: str) -> str:
        port = free_port()
        log = tmp_path / f"uvicorn-{port}.log"
        with log.open("wb") as output:
            server = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "app.serve:app", "--host", "127.0.0.1", "--port", str(port)],
                cwd=TESTS,
                env={**os.environ, **env},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        servers.append((server, log))
        url = f"http://127.0.0.1:{port}/"
        wait_for_http(url, server)
        return url

    yield start
    for server, _ in servers:
        server.terminate()
    for server, log in servers:
        # uvicorn shuts down gracefully, then ends by the signal it caught.
        assert server.wait(timeout=20) in (0, -signal.SIGTERM)
        output = log.read_text()
        assert "Application shutdown complete" in output, output
        assert "Traceback" not in output, output


@pytest.fixture
def browser() -> Iterator[object]:
    if not os.access(CHROMIUM, os.X_OK):
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("FANOUT_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason}, and FANOUT_REQUIRE_SERVICES=1")
        print(f"skipping: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def open_counter(browser: object, url: str) -> object:
    """A new page on ``url``, once its LiveView has joined."""
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(url)
    page.wait_for_selector("[data-phx-main].phx-connected", timeout=10_000)
    return page


def screenshot(page: object, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))  # type: ignore[attr-defined]
    assert path.stat().st_size > 0
    return path


def click_and_see_everywhere(pages: list[object], clicks: int) -> None:
    from playwright.sync_api import expect  # noqa: PLC0415

    for page in pages:
        expect(page.locator("#count")).to_have_text("0")  # type: ignore[attr-defined]
    for n in range(1, clicks + 1):
        clicker = pages[(n - 1) % len(pages)]
        clicker.click("#increment")  # type: ignore[attr-defined]
        for page in pages:
            expect(page.locator("#count")).to_have_text(str(n), timeout=10_000)  # type: ignore[attr-defined]


def test_a_click_in_one_page_updates_the_other(serve, browser):
    url = serve(FANOUT_PROVIDER="memory")
    first, second = open_counter(browser, url), open_counter(browser, url)
    click_and_see_everywhere([first, second], clicks=3)
    screenshot(first, "memory-first-page")
    screenshot(second, "memory-second-page")


def test_a_click_reaches_a_page_on_another_process_through_redis(serve, browser):
    require(REDIS_URL, 6379, "Redis")
    env = {"FANOUT_PROVIDER": "redis", "REDIS_URL": REDIS_URL, "FANOUT_CHANNEL_PREFIX": f"pyview-fanout-app:{uuid.uuid4().hex}:"}
    first_server, second_server = serve(**env), serve(**env)
    assert first_server != second_server
    first, second = open_counter(browser, first_server), open_counter(browser, second_server)
    processes = {page.locator("#process").inner_text() for page in (first, second)}  # type: ignore[attr-defined]
    assert len(processes) == 2, processes
    click_and_see_everywhere([first, second], clicks=3)
    screenshot(first, "redis-process-1-page")
    screenshot(second, "redis-process-2-page")


def server_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}stats", timeout=5) as response:
        stats: dict[str, Any] = json.load(response)
        return stats


def test_a_page_that_navigated_leaves_no_session_when_closed(serve, browser):
    # PyView 0.9 never closes the socket of the LiveView navigated to; the adapter does.
    url = serve(FANOUT_PROVIDER="memory")
    page, witness = open_counter(browser, url), open_counter(browser, url)
    page.click("#navigate")  # type: ignore[attr-defined]
    page.wait_for_url(f"{url}again")  # type: ignore[attr-defined]
    page.wait_for_selector("[data-phx-main].phx-connected", timeout=10_000)  # type: ignore[attr-defined]
    click_and_see_everywhere([page, witness], clicks=1)
    screenshot(page, "memory-navigated-page")
    assert server_stats(url)["sessions"] == 2
    page.close()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while server_stats(url)["sessions"] != 1:
        assert time.monotonic() < deadline, server_stats(url)
        time.sleep(0.05)
    assert server_stats(url)["subscriptions"] == 1


def test_chromium_is_debians(browser):
    # The browser is the system's package, not a download of playwright's.
    assert shutil.which("chromium") == CHROMIUM
    assert browser.version  # type: ignore[attr-defined]
