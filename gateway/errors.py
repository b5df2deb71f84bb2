"""The gateway's error hierarchy, mapped to GraphQL ``extensions.code`` in one place.

::

    GatewayError                      code
    ├── ConfigError                   (startup only: never reaches a client)
    ├── BadUserInput                  BAD_USER_INPUT
    ├── CriticalSourceFailed          CRITICAL_SOURCE_FAILED
    ├── SourceError                   (a per-source outcome: SourceResult.error, a SourceErrorCode)
    │   ├── UpstreamError             (the upstream is at fault: counts against its breaker)
    │   │   ├── UpstreamTimeout       UPSTREAM_TIMEOUT
    │   │   ├── UpstreamUnavailable   UPSTREAM_UNAVAILABLE   (connect/reset/protocol error)
    │   │   ├── UpstreamHTTPError     UPSTREAM_HTTP_ERROR    (with the status, e.g. 500)
    │   │   └── BadPayload            BAD_PAYLOAD            (unusable body as a whole)
    │   ├── Rejected                  (we refused to call: never counts against a breaker)
    │   │   ├── CircuitOpen           CIRCUIT_OPEN
    │   │   ├── BulkheadFull          BULKHEAD_FULL
    │   │   └── DeadlineExceeded      DEADLINE_EXCEEDED
    │   ├── UnknownSource             UNKNOWN_SOURCE         (an article of a source since removed)
    │   └── SourceInternalError       INTERNAL               (a bug: details in the log only)
    ├── DatabaseUnavailable           DATABASE_UNAVAILABLE
    └── LiveRefused                   (a subscription refused or ended by us, with its reason)
                                      TOO_MANY_SUBSCRIPTIONS, RATE_LIMITED, SLOW_CONSUMER, SHUTTING_DOWN

A rejection we cause ourselves is not an upstream failure (Envoy's rule): only
``UpstreamError`` is recorded by circuit breakers and retried. Every ``SourceError``
code is a member of :class:`SourceErrorCode`, which the schema exposes as an enum so
clients can switch over it (a test checks the two agree).
"""

from __future__ import annotations

import enum

import strawberry


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""

    code: str = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class ConfigError(GatewayError):
    """Invalid settings or sources file; raised at startup, printed without a traceback."""

    code = "CONFIG_ERROR"


class BadUserInput(GatewayError):
    """The client sent arguments we will not serve (e.g. ``first: 1000``)."""

    code = "BAD_USER_INPUT"


class CriticalSourceFailed(GatewayError):
    """A source marked ``critical = true`` produced no usable data for a request."""

    code = "CRITICAL_SOURCE_FAILED"


@strawberry.enum(description="Why a source produced no fresh data, as a code clients can switch over.")
class SourceErrorCode(enum.Enum):
    UPSTREAM_TIMEOUT = strawberry.enum_value(
        "UPSTREAM_TIMEOUT", description="The upstream sent no complete answer within the source's timeout."
    )
    UPSTREAM_UNAVAILABLE = strawberry.enum_value(
        "UPSTREAM_UNAVAILABLE", description="The upstream could not be reached (refused, reset, DNS, protocol)."
    )
    UPSTREAM_HTTP_ERROR = strawberry.enum_value(
        "UPSTREAM_HTTP_ERROR", description="The upstream answered with an HTTP status we cannot use (see `httpStatus`)."
    )
    BAD_PAYLOAD = strawberry.enum_value(
        "BAD_PAYLOAD", description="The upstream's answer was unusable as a whole (HTML, truncated, too large)."
    )
    CIRCUIT_OPEN = strawberry.enum_value(
        "CIRCUIT_OPEN", description="Not called: the source's circuit breaker is open after repeated failures."
    )
    BULKHEAD_FULL = strawberry.enum_value(
        "BULKHEAD_FULL", description="Not called: too many calls to upstreams were already in flight."
    )
    DEADLINE_EXCEEDED = strawberry.enum_value(
        "DEADLINE_EXCEEDED", description="The request's deadline (or the wait for another worker) ran out first."
    )
    UNKNOWN_SOURCE = strawberry.enum_value(
        "UNKNOWN_SOURCE", description="The source is no longer configured in this gateway."
    )
    INTERNAL = strawberry.enum_value("INTERNAL", description="A bug in the gateway; the details are in its log.")


class SourceError(GatewayError):
    """An outcome of fetching one source; surfaces as ``SourceResult.error``. ``code``
    is a :class:`SourceErrorCode` value."""

    code = "INTERNAL"
    #: The upstream's HTTP status, for UPSTREAM_HTTP_ERROR.
    http_status: int | None = None


class UpstreamError(SourceError):
    """The upstream misbehaved. These, and only these, count against its breaker."""
    #: Whether an idempotent GET that failed this way may be retried.
    retryable: bool = False


class UpstreamTimeout(UpstreamError):
    code = "UPSTREAM_TIMEOUT"


class UpstreamUnavailable(UpstreamError):
    """Connection refused/reset, DNS or protocol failure."""

    code = "UPSTREAM_UNAVAILABLE"
    retryable = True


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with a status we cannot use."""

    code = "UPSTREAM_HTTP_ERROR"

    def __init__(self, status: int, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.http_status = status
        self.retry_after_s = retry_after_s
        self.retryable = status in (429, 502, 503, 504)


class BadPayload(UpstreamError):
    """The body is unusable as a whole (HTML instead of JSON, truncated XML, ...)."""

    code = "BAD_PAYLOAD"


class Rejected(SourceError):
    """We declined to call the upstream. Never counted as an upstream failure."""


class CircuitOpen(Rejected):
    code = "CIRCUIT_OPEN"


class BulkheadFull(Rejected):
    code = "BULKHEAD_FULL"


class DeadlineExceeded(Rejected):
    code = "DEADLINE_EXCEEDED"


class UnknownSource(SourceError):
    code = "UNKNOWN_SOURCE"


class SourceInternalError(SourceError):
    code = "INTERNAL"


class DatabaseUnavailable(GatewayError):
    code = "DATABASE_UNAVAILABLE"


class LiveRefused(GatewayError):
    """A live subscription we refused (over the client's cap or rate limit) or ended
    (its queue filled: a slow consumer; the process shuts down). ``extensions``
    carries the code on every transport: graphql-core copies an original error's
    ``extensions`` into the GraphQL error, which the WebSocket protocol sends as is."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code)
        self.extensions = {"code": code}


def source_error_of(code: str, message: str, *, http_status: int | None = None) -> SourceError:
    """The error another process reported by code (a failed refresh's NOTIFY), as the
    same class here, so it is classified and shown as if it had happened locally."""
    if code == UpstreamHTTPError.code and http_status is not None:
        return UpstreamHTTPError(http_status, message)
    for kind in (UpstreamTimeout, UpstreamUnavailable, BadPayload, CircuitOpen, BulkheadFull, DeadlineExceeded,
                 UnknownSource):
        if kind.code == code:
            return kind(message)
    return SourceInternalError(message)
