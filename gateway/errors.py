"""The gateway's error hierarchy, mapped to GraphQL ``extensions.code`` in one place.

::

    GatewayError                      code
    ├── ConfigError                   (startup only: never reaches a client)
    ├── BadUserInput                  BAD_USER_INPUT
    ├── CriticalSourceFailed          CRITICAL_SOURCE_FAILED
    ├── SourceError                   (a per-source outcome, shown in SourceResult.error)
    │   ├── UpstreamError             (the upstream is at fault: counts against its breaker)
    │   │   ├── UpstreamTimeout       UPSTREAM_TIMEOUT
    │   │   ├── UpstreamUnavailable   UPSTREAM_UNAVAILABLE   (connect/reset/protocol error)
    │   │   ├── UpstreamHTTPError     UPSTREAM_HTTP_<status> (e.g. UPSTREAM_HTTP_500)
    │   │   └── BadPayload            BAD_PAYLOAD            (unusable body as a whole)
    │   └── Rejected                  (we refused to call: never counts against a breaker)
    │       ├── CircuitOpen           CIRCUIT_OPEN
    │       ├── BulkheadFull          BULKHEAD_FULL
    │       └── DeadlineExceeded      DEADLINE_EXCEEDED
    └── DatabaseUnavailable           DATABASE_UNAVAILABLE

A rejection we cause ourselves is not an upstream failure (Envoy's rule): only
``UpstreamError`` is recorded by circuit breakers and retried.
"""

from __future__ import annotations


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


class SourceError(GatewayError):
    """An outcome of fetching one source; surfaces as ``SourceResult.error``."""

    code = "SOURCE_ERROR"


class UpstreamError(SourceError):
    """The upstream misbehaved. These, and only these, count against its breaker."""

    code = "UPSTREAM_ERROR"
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

    def __init__(self, status: int, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message, code=f"UPSTREAM_HTTP_{status}")
        self.status = status
        self.retry_after_s = retry_after_s
        self.retryable = status in (429, 502, 503, 504)


class BadPayload(UpstreamError):
    """The body is unusable as a whole (HTML instead of JSON, truncated XML, ...)."""

    code = "BAD_PAYLOAD"


class Rejected(SourceError):
    """We declined to call the upstream. Never counted as an upstream failure."""

    code = "REJECTED"


class CircuitOpen(Rejected):
    code = "CIRCUIT_OPEN"


class BulkheadFull(Rejected):
    code = "BULKHEAD_FULL"


class DeadlineExceeded(Rejected):
    code = "DEADLINE_EXCEEDED"


class DatabaseUnavailable(GatewayError):
    code = "DATABASE_UNAVAILABLE"
