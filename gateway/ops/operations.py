"""A schema extension with one job: observe each GraphQL operation once it is done.
It times it, counts it by name, type and outcome (``ok``; ``partial``: data with
errors; ``error``: no data), and logs one line with the request id, the operation,
its duration and each source's status (:func:`log_operation`, which the app also
calls for the answers the response cache repeats: every operation served, one line)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry.trace import Span, Status, StatusCode
from strawberry.extensions import SchemaExtension

from gateway.ops import logging as gateway_logging

# The level check, and the line's path when logging is not configured (a test, an
# embedding app): the standard library's logger, where an unconfigured structlog would
# print to stdout. Configured (gateway/ops/logging.py), the line takes structlog's.
log = logging.getLogger("gateway.request")


def log_operation(
    *,
    request_id: str | None,
    client: str | None,
    name: str | None,
    op_type: str,
    outcome: str,
    duration_ms: float,
    sources: Mapping[str, str],
    errors: list[Any] | None,
    cache_hit: bool,
) -> None:
    """The one ``graphql.operation`` line (callers check :func:`logging_on` first).

    Logging configured (gateway/ops/logging.py): in JSON, the line rendered directly
    (:func:`~gateway.ops.logging.json_lines`); as console lines, structlog's fast path,
    no standard library record (a third of what the line cost a warm request).
    Otherwise a record made with ``makeRecord`` and ``handle`` rather than
    ``log.info``: the same record, minus the walk up the stack for the caller's file
    and line, which it never shows."""
    fields = {
        "request_id": request_id,
        "client": client,
        "operation_name": name,
        "operation_type": op_type,
        "outcome": outcome,
        "duration_ms": duration_ms,
        "sources": sources,
        "errors": errors,
        "cache_hit": cache_hit,
    }
    write = gateway_logging.json_lines(log.name)
    if write is not None:
        write("graphql.operation", fields)
        return
    fast = gateway_logging.structured(log.name)
    if fast is not None:
        fast.info("graphql.operation", **fields)
        return
    log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, "graphql.operation", (), None, extra=fields))


def _codes(errors: list[Any]) -> list[str]:
    """The codes the client gets for these errors (not classified yet at this point)."""
    from gateway.schema.errors import code_of  # gateway.schema imports this module

    return [code_of(e) for e in errors]


def logging_on(enabled: bool) -> bool:
    """Whether an operation line would be written (GATEWAY_OPERATION_LOG, then the level)."""
    return enabled and log.isEnabledFor(logging.INFO)


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
        log_it = logging_on(services.settings.operation_log)
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
        if log_it:
            log_operation(
                request_id=ctx.request_id,
                client=ctx.client_id,
                name=name,
                op_type=op_type,
                outcome=outcome,
                duration_ms=round(seconds * 1000, 2),
                sources={o.source.id: o.status.value for o in ctx.outcomes},
                errors=_codes(result.errors) if result and result.errors else None,
                cache_hit=False,
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
