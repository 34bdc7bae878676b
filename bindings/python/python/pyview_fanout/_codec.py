"""How a distributed provider turns messages into bytes and back.

The first byte of every payload says how the rest is encoded, so that ``bytes`` travel as
they are whatever the codec, and an instance recognises a payload it cannot read:

- ``0x00``: the provider's codec (JSON unless a codec was given): ``encode(message)``.
- ``0x01``: a ``bytes``, ``bytearray`` or ``memoryview`` message, as is; received as ``bytes``.

Every instance sharing a channel prefix must use the same codec.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Codec = tuple[Callable[[Any], bytes], Callable[[bytes], Any]]
"""A pair of callables: ``encode(message) -> bytes`` and ``decode(bytes) -> message``."""

_ENCODED = b"\x00"
_RAW = b"\x01"


def _json_encode(message: Any) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def _json_decode(data: bytes) -> Any:
    return json.loads(data)


class PayloadCodec:
    """Tags and encodes messages for the wire, and reverses it."""

    __slots__ = ("_decode", "_encode")

    def __init__(self, codec: Codec | None) -> None:
        if codec is None:
            self._encode: Callable[[Any], bytes] = _json_encode
            self._decode: Callable[[bytes], Any] = _json_decode
            return
        if not (isinstance(codec, tuple) and len(codec) == 2 and all(callable(part) for part in codec)):
            raise TypeError("codec must be a pair of callables (encode, decode)")
        self._encode, self._decode = codec

    def encode(self, message: Any) -> bytes:
        """The payload for ``message``. Raises ``TypeError`` naming the type that cannot be
        encoded (JSON's own message does), or if a user codec returns something else than bytes."""
        if isinstance(message, (bytes, bytearray, memoryview)):
            return _RAW + bytes(message)
        encoded = self._encode(message)
        if not isinstance(encoded, (bytes, bytearray)):
            raise TypeError(f"the codec's encode returned a {type(encoded).__name__}, not bytes")
        return _ENCODED + encoded

    def decode(self, payload: bytes) -> Any:
        """The message a payload from ``encode`` carries. Raises ``ValueError`` for a payload
        with an unknown tag, and whatever the codec raises for one it cannot read."""
        tag = payload[:1]
        if tag == _RAW:
            return payload[1:]
        if tag == _ENCODED:
            return self._decode(payload[1:])
        raise ValueError(f"payload starts with {tag!r}, not a pyview_fanout tag (0x00 or 0x01)")
