"""CORS through Starlette's own CORSMiddleware: preflights answered, Max-Age set."""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from gateway.settings import EdgeSettings

ALLOWED_METHODS = ("GET", "POST")
ALLOWED_HEADERS = ("accept", "authorization", "content-type", "last-event-id", "x-api-key", "x-request-id")
#: Headers a browser script may read from our answers.
EXPOSED_HEADERS = ("ratelimit", "ratelimit-policy", "retry-after", "x-request-id")


def cors_middleware(edge: EdgeSettings) -> Middleware | None:
    """None when no origin is configured (same-origin only, the browser default)."""
    if not edge.cors_origins:
        return None
    # '*' with credentials is refused when settings are read; CORSMiddleware would
    # otherwise echo the caller's origin, which is what '*' must not mean.
    return Middleware(
        CORSMiddleware,
        allow_origins=list(edge.cors_origins),
        allow_methods=list(ALLOWED_METHODS),
        allow_headers=list(ALLOWED_HEADERS),
        expose_headers=list(EXPOSED_HEADERS),
        allow_credentials=edge.cors_allow_credentials,
        max_age=edge.cors_max_age_s,
    )
