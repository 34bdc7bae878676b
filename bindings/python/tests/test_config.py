"""Configuration by keyword arguments or a TOML file; errors name the key."""

from __future__ import annotations

import pytest

from conftest import Gate, eventually
from pyview_fanout import ConfigError, FanoutError, InMemoryPubSub, PostgresPubSub, RedisPubSub


async def test_keyword_settings_apply(make_pubsub):
    pubsub = make_pubsub(
        capacity=3,
        policy="drop_newest",
        overrides=[{"prefix": "presence:", "policy": "drop_oldest", "max_queued": 2}],
        limits={"max_topic_bytes": 64},
        stop_grace_ms=50,
        close_grace_ms=0,
    )
    gate = Gate()
    await pubsub.subscribe_topic("s", "room", gate)
    await pubsub.broadcast("room", 0)
    await eventually(lambda: gate.calls)
    for n in range(1, 6):
        await pubsub.broadcast("room", n)
    stats = pubsub.session_stats("s")
    assert stats == {"queued": 3, "capacity": 3, "topics": 1}
    assert pubsub.stats()["dropped"]["drop_newest"] == 2


def test_a_toml_file_applies(tmp_path):
    path = tmp_path / "fanout.toml"
    path.write_text('capacity = 7\npolicy = { block = { timeout_ms = 50, then = "disconnect" } }\n')
    pubsub = InMemoryPubSub(path)
    assert pubsub.stats()["sessions"] == 0
    assert pubsub._core.stop_grace == 5.0


@pytest.mark.parametrize(
    ("settings", "key", "text"),
    [
        ({"capacity": 0}, "capacity", "must be between 1 and 1048576"),
        ({"capacity": "many"}, "capacity", "invalid type"),
        ({"policy": "sometimes"}, "policy", "unknown variant"),
        ({"policy": {"block": {"timeout_ms": 0, "then": "disconnect"}}}, "policy.block.timeout_ms", "is 0 ms"),
        ({"overrides": [{"prefix": "a:", "max_queued": 1000}]}, "overrides[0].max_queued", "capacity"),
        ({"overrides": [{"prefix": ""}]}, "overrides[0].prefix", "empty"),
        ({"limits": {"max_topic_bytes": 0}}, "limits.max_topic_bytes", "is 0"),
        ({"limits": {"max_topic_size": 3}}, "limits.max_topic_size", "unknown field"),
        ({"stop_grace_ms": 10**20}, "stop_grace_ms", "out of range"),
        ({"capacity": object()}, "capacity", "not a config value"),
    ],
)
def test_bad_settings_raise_config_error_naming_the_key(settings, key, text):
    with pytest.raises(ConfigError) as raised:
        InMemoryPubSub(**settings)
    assert raised.value.key == key
    assert f"`{key}`" in str(raised.value)
    assert text in str(raised.value)
    assert isinstance(raised.value, FanoutError) and isinstance(raised.value, ValueError)


def test_a_bad_file_names_the_key_file_and_line(tmp_path):
    path = tmp_path / "fanout.toml"
    path.write_text('capacity = 16\n\n[[override]]\nprefix = "billing:"\nmax_queued = 64\n')
    with pytest.raises(ConfigError) as raised:
        InMemoryPubSub(str(path))
    error = raised.value
    assert error.key == "override[0].max_queued"
    assert error.file == str(path)
    assert error.line == 5
    assert str(error).startswith(f"{path}:5:")


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the file") as raised:
        InMemoryPubSub(tmp_path / "absent.toml")
    assert raised.value.file == str(tmp_path / "absent.toml")


def test_a_file_and_settings_together_are_refused(tmp_path):
    with pytest.raises(TypeError, match="capacity"):
        InMemoryPubSub(tmp_path / "fanout.toml", capacity=3)


@pytest.mark.parametrize("provider_class", [InMemoryPubSub, RedisPubSub, PostgresPubSub], ids=lambda c: c.__name__)
def test_an_unknown_keyword_is_a_type_error(provider_class):
    with pytest.raises(TypeError, match="capacty"):
        provider_class(capacty=8)


@pytest.mark.parametrize("provider_class", [InMemoryPubSub, RedisPubSub, PostgresPubSub], ids=lambda c: c.__name__)
def test_a_file_and_keyword_settings_together_are_a_type_error(provider_class, tmp_path):
    path = tmp_path / "fanout.toml"
    path.write_text("capacity = 8\n")
    with pytest.raises(TypeError, match="not both"):
        provider_class(path, capacity=8)
    assert provider_class(path).stats()["sessions"] == 0
