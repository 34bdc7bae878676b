"""The engine's settings as keyword arguments: their types, and the dict the native parser takes."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

Fallback = Literal["drop_newest", "drop_oldest", "disconnect"]
"""What a ``block`` policy does once its wait times out."""

Policy = Literal["drop_newest", "drop_oldest", "disconnect"] | Mapping[str, Mapping[str, Any]]
"""An overflow policy: a name, or ``{"block": {"timeout_ms": 50, "then": "disconnect"}}``
(also ``block_once``)."""


class Override(TypedDict, total=False):
    """Settings for the topics under a prefix (the longest matching prefix wins)."""

    prefix: str
    policy: Policy
    max_queued: int


class Limits(TypedDict, total=False):
    """Size limits, in bytes."""

    max_topic_bytes: int
    max_payload_bytes: int
    max_session_id_bytes: int


class EngineSettings(TypedDict, total=False):
    """The engine's settings as keyword arguments, for every provider; the names and shapes
    of ``fanout::Config``'s TOML file (``overrides`` is its ``[[override]]`` list)."""

    capacity: int | None
    policy: Policy | None
    overrides: Sequence[Override] | None
    limits: Limits | None
    stop_grace_ms: int | None
    close_grace_ms: int | None


class BrokerSettings(TypedDict, total=False):
    """The settings every distributed provider has, times in milliseconds (the crate's
    ``RedisConfig`` / ``PostgresConfig`` fields)."""

    url: str | None
    channel_prefix: str | None
    max_envelope_bytes: int | None
    publish_queue: int | None
    max_pipeline: int | None
    connect_timeout_ms: int | None
    response_timeout_ms: int | None
    health_check_interval_ms: int | None
    reconnect_backoff_min_ms: int | None
    reconnect_backoff_max_ms: int | None


class RedisSettings(BrokerSettings, EngineSettings, total=False):
    """``RedisPubSub``'s keyword settings: Redis's, then the engine's."""


class PostgresOnlySettings(TypedDict, total=False):
    """What PostgreSQL adds to ``BrokerSettings``: where messages over ``NOTIFY``'s limit go."""

    large_payloads: Literal["refuse", "table"] | None
    payload_table: str | None
    payload_ttl_ms: int | None


class PostgresBrokerSettings(PostgresOnlySettings, BrokerSettings, total=False):
    """PostgreSQL's settings: the ``[postgres]`` TOML table's keys."""


class PostgresSettings(PostgresBrokerSettings, EngineSettings, total=False):
    """``PostgresPubSub``'s keyword settings: PostgreSQL's, then the engine's."""


def engine_settings(
    config: str | os.PathLike[str] | None, settings: Mapping[str, Any]
) -> tuple[str | None, dict[str, Any]]:
    """The config file's path, or the settings under the file's key names; not both."""
    unknown = sorted(set(settings) - set(EngineSettings.__annotations__))
    if unknown:
        raise TypeError(f"unexpected keyword arguments: {', '.join(unknown)}")
    given = {name: value for name, value in settings.items() if value is not None}
    if config is not None:
        if given:
            raise TypeError(f"give a config file or keyword settings, not both (got {', '.join(given)})")
        return os.fspath(config), {}
    if "overrides" in given:
        given["override"] = given.pop("overrides")
    return None, given
