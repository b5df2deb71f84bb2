"""What the edge keeps for the process's lifetime: the cost estimator, the rate
limiter and its shared-table sync. Built in the app's lifespan, torn down there."""

from __future__ import annotations

from dataclasses import dataclass

import graphql

from gateway.edge.cost import CostEstimator
from gateway.edge.ratelimit import RateLimiter, SharedBuckets
from gateway.resilience.clock import Clock
from gateway.settings import EdgeSettings, Settings
from gateway.store.db import Database
from gateway.store.limits import PostgresLimitStore


@dataclass(slots=True)
class EdgeRuntime:
    settings: EdgeSettings
    estimator: CostEstimator
    limiter: RateLimiter | None
    shared: SharedBuckets | None
    graphiql: bool

    @classmethod
    def start(cls, settings: Settings, *, sdl: str, db: Database | None, clock: Clock) -> EdgeRuntime:
        edge = settings.edge
        # Type information for the estimate, from the SDL we export (public API only).
        estimator = CostEstimator(graphql.build_schema(sdl), settings)
        limiter = None
        shared = None
        if edge.rate_limit_enabled:
            limiter = RateLimiter(burst=edge.rate_limit_burst, per_s=edge.rate_limit_per_s, clock=clock)
            if edge.rate_limit_sync_ms > 0 and db is not None:
                shared = SharedBuckets(limiter, PostgresLimitStore(db), interval_s=edge.rate_limit_sync_ms / 1000,
                                       fail_open=edge.rate_limit_fail_open, clock=clock)
                shared.start()
        return cls(edge, estimator, limiter, shared, edge.graphiql_on)

    async def aclose(self) -> None:
        if self.shared is not None:
            await self.shared.aclose()
