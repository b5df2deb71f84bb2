"""Resilience primitives: circuit breaker, bulkheads, singleflight and deadlines.

Each takes its time source as an argument (a :class:`~gateway.resilience.clock.Clock`),
so tests step time instead of sleeping.
"""
