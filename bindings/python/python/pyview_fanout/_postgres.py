"""``PostgresPubSub``: fanout's PostgreSQL provider, with handlers on asyncio (``_provider``)."""

from __future__ import annotations

import os
from typing import Unpack

from . import _core
from ._codec import Codec
from ._config import PostgresBrokerSettings, PostgresSettings
from ._provider import Provider


class PostgresPubSub(Provider):
    """PyView's ``PubSubProvider`` for several server processes sharing one PostgreSQL
    database, over ``LISTEN`` / ``NOTIFY``.

    It behaves as ``RedisPubSub`` does (``start()`` connects, ``subscribe_topic`` returns once
    the database listens on the topic's channel, messages are encoded the same way, with the
    same ``codec``), with PostgreSQL's limits: a notification carries at most 7999 bytes, so a
    larger message raises ``PayloadTooLargeError`` unless ``large_payloads="table"`` stores it
    in ``payload_table`` for ``payload_ttl_ms``; topics longer than a channel name allows are
    hashed.

    PostgreSQL settings, as ``fanout::postgres::PostgresConfig``'s ``[postgres]`` TOML table
    names them: ``url`` (default ``postgres://postgres@127.0.0.1:5432/test``),
    ``channel_prefix``, ``large_payloads``, ``payload_table``, ``payload_ttl_ms``,
    ``max_envelope_bytes``, ``publish_queue``, ``max_pipeline``, ``connect_timeout_ms``,
    ``response_timeout_ms``, ``health_check_interval_ms``, ``reconnect_backoff_min_ms``,
    ``reconnect_backoff_max_ms``. The local engine is configured as for ``InMemoryPubSub``.
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | None = None,
        *,
        codec: Codec | None = None,
        **settings: Unpack[PostgresSettings],
    ) -> None:
        self._init_distributed(_core.Provider.postgres, PostgresBrokerSettings, codec, config, settings)
