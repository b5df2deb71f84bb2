"""A schema extension with one job: observe each GraphQL operation once it is done.
It times it, counts it by name, type and outcome (``ok``; ``partial``: data with
errors; ``error``: no data), and logs one line with the request id, the operation,
its duration and each source's status."""

from __future__ import annotations

from collections.abc import Iterator

import structlog
from strawberry.extensions import SchemaExtension

log = structlog.get_logger("gateway.request")


class OperationObserver(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        ctx = self.execution_context.context
        services = getattr(ctx, "services", None)
        metrics = getattr(services, "metrics", None)
        if metrics is None:
            yield
            return
        clock = services.clock
        started = clock.monotonic()
        yield
        seconds = clock.monotonic() - started
        result = self.execution_context.result
        if result is None or (result.errors and result.data is None):
            outcome = "error"
        elif result.errors:
            outcome = "partial"
        else:
            outcome = "ok"
        try:
            op_type = self.execution_context.operation_type.value
        except Exception:  # noqa: BLE001 - no document (a parse error) or no such operation
            op_type = "unknown"
        name = self.execution_context.operation_name
        metrics.operation(name, op_type, outcome, seconds)
        log.info(
            "graphql.operation",
            request_id=ctx.request_id,
            client=ctx.client_id,
            operation_name=name,
            operation_type=op_type,
            outcome=outcome,
            duration_ms=round(seconds * 1000, 2),
            sources={o.source.id: o.status.value for o in ctx.outcomes},
            errors=[(e.extensions or {}).get("code") for e in result.errors] if result and result.errors else None,
        )
