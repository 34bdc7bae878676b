"""The package's exceptions: one base, one class per kind of failure."""

from __future__ import annotations


class FanoutError(Exception):
    """Base class of every error the package raises."""


class ConfigError(FanoutError, ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range.

    ``key`` names it as given (``capacity``, ``overrides[1].max_queued``); a file's errors also
    carry the ``file``, ``line`` and ``column``.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.file = file
        self.line = line
        self.column = column


class InvalidTopicError(FanoutError, ValueError):
    """The topic is empty or longer than ``limits.max_topic_bytes``."""


class InvalidSessionIdError(FanoutError, ValueError):
    """The session id is empty or longer than ``limits.max_session_id_bytes``."""


class PayloadTooLargeError(FanoutError, ValueError):
    """A message is larger than the provider takes: in memory, a ``bytes``, ``bytearray`` or
    ``str`` longer than ``limits.max_payload_bytes``; on a broker, an encoded message over that
    limit or an envelope over ``max_envelope_bytes``."""


class StoppedError(FanoutError, RuntimeError):
    """The provider has been stopped; it takes no more operations."""


class SessionClosedError(FanoutError, RuntimeError):
    """The session was closed while the operation ran."""


class NotStartedError(FanoutError, RuntimeError):
    """A distributed provider was used before ``start()``."""


class BrokerError(FanoutError, ConnectionError):
    """The broker could not be reached, or did not confirm a subscription or a publish; the
    message says which, and what still happened locally."""
