"""The counter application for uvicorn (``uvicorn app.serve:app``), with the provider chosen
by the environment: ``FANOUT_PROVIDER`` is ``memory`` (default) or ``redis``, the latter on
``REDIS_URL`` with ``FANOUT_CHANNEL_PREFIX``."""

from __future__ import annotations

import os

from pyview_fanout import InMemoryPubSub, PubSubProvider, RedisPubSub

from .counter import make_app


def provider_from_env() -> PubSubProvider:
    kind = os.environ.get("FANOUT_PROVIDER", "memory")
    if kind == "memory":
        return InMemoryPubSub()
    if kind == "redis":
        return RedisPubSub(
            url=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379",
            channel_prefix=os.environ.get("FANOUT_CHANNEL_PREFIX", "pyview-fanout-app:"),
        )
    raise ValueError(f"FANOUT_PROVIDER is {kind!r}; it must be memory or redis")


app = make_app(provider_from_env())
