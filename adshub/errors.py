"""The hub's small exception tree.

Callers decide by class, not by message: transient errors are retried with
backoff, invalid input is refused (HTTP 400/403 or the dead-letter queue with
the reason), delivery errors are recorded on the outbound message.
"""

from __future__ import annotations


class AdshubError(Exception):
    """Base of every error the hub raises on purpose."""


class ConfigurationError(AdshubError):
    """A setting is missing or wrong; the hub refuses to start."""


class InvalidInput(AdshubError):
    """A payload from outside is malformed; it is refused, never retried."""


class ForgedInput(InvalidInput):
    """A payload failed its signature or secret check."""


class TransientError(AdshubError):
    """A dependency is unavailable for now (database, broker, remote API)."""


class QueryTooBroad(TransientError):
    """A list the database could not read within its time: the filter needs narrowing, nothing is broken."""


class Forbidden(AdshubError):
    """The person acting may not do this (a manager acting on an admin); refused and audited."""


class NotFound(AdshubError):
    """The requested record does not exist."""


class DeliveryError(AdshubError):
    """An outbound message could not be delivered."""


class RetryableDeliveryError(DeliveryError):
    """The remote side asked us to try again later (429, 5xx, timeouts)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """The message can never be delivered (the user blocked the bot, a bad address)."""
