"""``RedisPubSub``: fanout's Redis provider, with handlers on asyncio (``_provider``)."""

from __future__ import annotations

import os
from typing import Unpack

from . import _core
from ._codec import Codec
from ._config import BrokerSettings, RedisSettings
from ._provider import Provider


class RedisPubSub(Provider):
    """PyView's ``PubSubProvider`` for several server processes sharing one Redis.

    A broadcast on any instance reaches the subscribed sessions of every instance with the
    same ``url`` and ``channel_prefix``; sessions on this instance get it in-process, without
    a round trip. ``start()`` connects (and raises ``BrokerError`` if Redis cannot be
    reached); ``subscribe_topic`` returns once Redis has confirmed the topic's channel, so a
    broadcast that begins afterwards on any instance reaches the session (G1). Before
    ``start()`` operations raise ``NotStartedError``.

    Messages travel encoded (``_codec``): JSON by default, ``bytes`` as they are, or with
    ``codec=(encode, decode)``. ``broadcast`` raises ``TypeError`` naming the type it cannot
    encode. Each recipient decodes its own copy.

    Redis settings (times in milliseconds): ``url`` (default ``redis://127.0.0.1:6379``),
    ``channel_prefix`` (default ``"fanout:"``), ``max_envelope_bytes``, ``publish_queue``,
    ``max_pipeline``, ``connect_timeout_ms``, ``response_timeout_ms``,
    ``health_check_interval_ms``, ``reconnect_backoff_min_ms``, ``reconnect_backoff_max_ms``
    (``fanout::redis::RedisConfig``). The local engine is configured as for
    ``InMemoryPubSub``: a TOML file path or its keyword arguments.

    Redis pub/sub is at-most-once: what other instances publish while the connection is down
    is lost; the provider reconnects and re-subscribes, and ``stats()["broker"]`` counts it.
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | None = None,
        *,
        codec: Codec | None = None,
        **settings: Unpack[RedisSettings],
    ) -> None:
        self._init_distributed(_core.Provider.redis, BrokerSettings, codec, config, settings)
