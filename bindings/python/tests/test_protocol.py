"""Every provider class satisfies the design's ``PubSubProvider`` protocol."""

from __future__ import annotations

import inspect

import pytest

from pyview_fanout import InMemoryPubSub, PostgresPubSub, PubSubProvider, RedisPubSub

PROVIDERS = [InMemoryPubSub, RedisPubSub, PostgresPubSub]
METHODS = ["subscribe_topic", "unsubscribe_topic", "unsubscribe_all", "broadcast", "start", "stop"]


@pytest.mark.parametrize("provider_class", PROVIDERS, ids=lambda c: c.__name__)
def test_provider_satisfies_the_protocol(provider_class):
    provider = provider_class()
    assert isinstance(provider, PubSubProvider)
    for name in METHODS:
        method = getattr(provider_class, name)
        assert inspect.iscoroutinefunction(method), name
        expected = list(inspect.signature(getattr(PubSubProvider, name)).parameters)
        assert list(inspect.signature(method).parameters) == expected, name


def test_an_object_without_the_methods_is_not_a_provider():
    assert not isinstance(object(), PubSubProvider)
