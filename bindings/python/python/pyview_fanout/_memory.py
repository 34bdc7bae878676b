"""``InMemoryPubSub``: fanout's in-memory engine, with handlers on asyncio (``_provider``)."""

from __future__ import annotations

import os
from typing import Unpack

from . import _core
from ._config import EngineSettings, engine_settings
from ._provider import Provider


class InMemoryPubSub(Provider):
    """The in-process provider: PyView's ``PubSubProvider`` on fanout's engine.

    Configured by a TOML file (``InMemoryPubSub("fanout.toml")``) or by keyword arguments of
    the same names and shapes (``capacity``, ``policy``, ``overrides``, ``limits``,
    ``stop_grace_ms``, ``close_grace_ms``); ``None`` keeps the default. Errors raise
    ``ConfigError`` naming the key.

    Messages are any Python object: every subscriber gets the same object, released once the
    last of them has taken it (or it was dropped by a policy, an unsubscribe or ``stop``).
    """

    def __init__(self, config: str | os.PathLike[str] | None = None, **settings: Unpack[EngineSettings]) -> None:
        path, table = engine_settings(config, settings)
        if path is not None:
            self._core = _core.Provider.from_file(path)
        else:
            self._core = _core.Provider.from_settings(table)
        self._init_sessions()

    def _start_lazily(self) -> None:
        # The engine's start completes at once: the reaper is spawned on the runtime.
        self._core.start()
