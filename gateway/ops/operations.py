"""A schema extension with one job: observe each GraphQL operation once it is done.
It times it, counts it by name, type and outcome (``ok``; ``partial``: data with
errors; ``error``: no data), and logs one line with the request id, the operation,
its duration and each source's status."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from opentelemetry.trace import Span, Status, StatusCode
from strawberry.extensions import SchemaExtension

# The standard library's logger, not structlog's: unconfigured (a test, an embedding
# app) an INFO line costs one level check; configured (gateway/ops/logging.py) its
# ``extra`` fields become the JSON line's keys.
log = logging.getLogger("gateway.request")


class OperationObserver(SchemaExtension):
    """Only in schemas with something to feed (``build_schema(observe=...)``): metrics
    (GATEWAY_METRICS), the log line (GATEWAY_OPERATION_LOG and the level), tracing."""

    def on_operation(self) -> Iterator[None]:
        ctx = self.execution_context.context
        services = getattr(ctx, "services", None)
        if services is None:  # a schema executed outside the gateway (export, tests)
            yield
            return
        metrics = services.metrics
        logging_on = services.settings.operation_log and log.isEnabledFor(logging.INFO)
        clock = services.clock
        started = clock.monotonic()
        tracer = services.tracer
        if tracer is None:
            yield
        else:
            with tracer.start_as_current_span("graphql operation") as span:
                yield
                self._describe(span)
        seconds = clock.monotonic() - started
        result = self.execution_context.result
        if result is None or (result.errors and result.data is None):
            outcome = "error"
        elif result.errors:
            outcome = "partial"
        else:
            outcome = "ok"
        op_type = self._operation_type()
        name = self.execution_context.operation_name
        if metrics is not None:
            metrics.operation(name, op_type, outcome, seconds)
        if logging_on:
            log.info(
                "graphql.operation",
                extra={
                    "request_id": ctx.request_id,
                    "client": ctx.client_id,
                    "operation_name": name,
                    "operation_type": op_type,
                    "outcome": outcome,
                    "duration_ms": round(seconds * 1000, 2),
                    "sources": {o.source.id: o.status.value for o in ctx.outcomes},
                    "errors": [(e.extensions or {}).get("code") for e in result.errors]
                    if result and result.errors
                    else None,
                },
            )

    def _operation_type(self) -> str:
        try:
            return self.execution_context.operation_type.value
        except Exception:  # noqa: BLE001 - no document (a parse error) or no such operation
            return "unknown"

    def _describe(self, span: Span) -> None:
        op_type, name = self._operation_type(), self.execution_context.operation_name
        span.update_name(f"{op_type} {name}" if name else op_type)
        span.set_attribute("graphql.operation.type", op_type)
        if name:
            span.set_attribute("graphql.operation.name", name)
        result = self.execution_context.result
        if result is not None and result.errors:
            span.set_status(Status(StatusCode.ERROR))
