"""fanout's pub/sub for PyView: the design's ``PubSubProvider`` on a Rust engine.

Every session has one bounded mailbox for all its topics and runs its handlers one message at
a time, in publish order, on the asyncio loop that subscribed it; a policy decides what a full
mailbox does, and every drop is counted.

    from pyview_fanout import InMemoryPubSub, SessionPubSub

    pubsub = InMemoryPubSub(capacity=256, policy="drop_oldest")
    await pubsub.start()
    await pubsub.subscribe_topic("tab-1", "room:lobby", on_message)
    await pubsub.broadcast("room:lobby", {"text": "hello"})
"""

from ._codec import Codec
from ._config import (
    BrokerSettings,
    EngineSettings,
    Fallback,
    Limits,
    Override,
    Policy,
    PostgresSettings,
    RedisSettings,
)
from ._errors import (
    BrokerError,
    ConfigError,
    FanoutError,
    InvalidSessionIdError,
    InvalidTopicError,
    NotStartedError,
    PayloadTooLargeError,
    SessionClosedError,
    StoppedError,
)
from ._memory import InMemoryPubSub
from ._postgres import PostgresPubSub
from ._protocol import PubSubProvider, TopicHandler
from ._redis import RedisPubSub
from ._session import SessionPubSub

__all__ = [
    "BrokerError",
    "BrokerSettings",
    "Codec",
    "ConfigError",
    "EngineSettings",
    "Fallback",
    "FanoutError",
    "InMemoryPubSub",
    "InvalidSessionIdError",
    "InvalidTopicError",
    "Limits",
    "NotStartedError",
    "Override",
    "PayloadTooLargeError",
    "Policy",
    "PostgresPubSub",
    "PostgresSettings",
    "PubSubProvider",
    "RedisPubSub",
    "RedisSettings",
    "SessionClosedError",
    "SessionPubSub",
    "StoppedError",
    "TopicHandler",
]
