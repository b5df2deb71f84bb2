"""The edge: what stands between the internet and the GraphQL executor.

Starlette middleware, one job each, outermost first::

    RequestIdMiddleware      request id + arrival time (request_id.py)
    BodyLimitMiddleware      413 over GATEWAY_MAX_REQUEST_BYTES (body_limit.py)
    CORSMiddleware           Starlette's, from GATEWAY_CORS_ORIGINS (cors.py)
    ClientIdentityMiddleware API key or client IP; 401 for unknown keys (identity.py)

then, on ``/graphql`` only, :class:`~gateway.edge.gate.GraphQLGate`: GraphQL over
HTTP, cost estimate (cost.py) and the rate-limit charge (ratelimit.py), in front of
request coalescing and Strawberry.
"""

from __future__ import annotations

from starlette.middleware import Middleware

from gateway.edge.body_limit import BodyLimitMiddleware
from gateway.edge.cors import cors_middleware
from gateway.edge.identity import ClientIdentityMiddleware
from gateway.edge.request_id import RequestIdMiddleware
from gateway.resilience.clock import Clock
from gateway.settings import Settings


def edge_middleware(settings: Settings, *, clock: Clock) -> list[Middleware]:
    edge = settings.edge
    stack = [
        Middleware(RequestIdMiddleware, clock=clock),
        Middleware(BodyLimitMiddleware, max_bytes=edge.max_request_bytes),
    ]
    cors = cors_middleware(edge)
    if cors is not None:
        stack.append(cors)
    stack.append(Middleware(ClientIdentityMiddleware, edge=edge))
    return stack
