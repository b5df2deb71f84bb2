"""OpenTelemetry tracing, off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the SDK's
own variables then configure the OTLP/HTTP exporter: headers, timeouts, service name).

Spans follow the GraphQL semantic conventions: one per operation, named
``{graphql.operation.type} {graphql.operation.name}`` with both attributes; a child
per source fetch (``gateway.source.id``, ``gateway.source.status``); the upstream call
under a refresh (``http.response.status_code``); and one per database round-trip
(``db.system.name = postgresql``). Each app gets its own tracer provider (none is
installed globally), so tests read spans from an in-memory exporter.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACER_NAME = "news-gateway"


def provider_from_env() -> TracerProvider | None:
    """An OTLP-exporting provider when the endpoint is configured; None otherwise."""
    if not os.environ.get(OTLP_ENDPOINT_ENV):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", TRACER_NAME)}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # exports off the loop, in its thread
    return provider


def tracer_of(provider: TracerProvider | None) -> Tracer | None:
    """None when tracing is off: callers skip span work entirely on the hot path."""
    if provider is None:
        return None
    from gateway import __version__

    return provider.get_tracer(TRACER_NAME, __version__)
