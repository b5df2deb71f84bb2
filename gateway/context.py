"""The per-request GraphQL context: process services, fresh loaders, a deadline."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.edge.cost import CostMeter
from gateway.loaders import Loaders
from gateway.resilience.deadline import Deadline

if TYPE_CHECKING:
    from gateway.documents import CachedDocument
    from gateway.outcomes import SourceOutcome
    from gateway.reads import ReadLog
    from gateway.schema.execmemo import ResultMemo
    from gateway.services import Services


@dataclass(slots=True)
class GatewayContext:
    services: Services
    loaders: Loaders
    deadline: Deadline
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: Who is asking (an API client's id, or "ip:<address>"), for logs.
    client_id: str | None = None
    #: Every source outcome this request got, in the order the loaders got them.
    outcomes: list[SourceOutcome] = field(default_factory=list)
    #: What this request actually returns and fetches, stopped at the cost limits.
    meter: CostMeter | None = None
    #: What this answer read (source keys, freshness, ages), for the response cache
    #: and Cache-Control; None when nothing records it.
    reads: ReadLog | None = None
    #: The parsed document's cache entry (see :mod:`gateway.documents`).
    document: CachedDocument | None = None
    #: Live updates: the SSE ``Last-Event-ID`` header (a resume cursor), the charge
    #: a WebSocket subscription pays when it starts (None: the gate charged already),
    #: and the cursor of the event being sent (the SSE event id).
    last_event_id: str | None = None
    charge_subscription: Callable[[], None] | None = None
    live_cursor: str | None = None
    #: A WebSocket's connection_init payload (Strawberry sets it) and its scope.
    connection_params: dict[str, Any] | None = None
    socket_scope: dict[str, Any] | None = None

    @property
    def result_memo(self) -> ResultMemo:
        """Where the fast executor keeps sub-answers of cached values (the app's)."""
        return self.services.results

    def renew_for_event(self) -> None:
        """A live subscription outlives its request's deadline: each event is resolved
        like a request of its own (a fresh deadline, loaders and cost meter) once the
        old deadline is half spent, so that e.g. `comments` of an event still load."""
        budget_s = self.services.settings.request_deadline_ms / 1000
        if self.deadline.remaining() > budget_s / 2:
            return
        self.deadline = Deadline.after(budget_s, self.services.clock)
        self.outcomes = []
        self.loaders = Loaders.create(
            self.services.settings, self.services.source_service, self.deadline, outcomes=self.outcomes, reads=None
        )
        edge = self.services.settings.edge
        self.meter = CostMeter(edge.max_query_cost, edge.max_upstream_fetches)
        self.reads = None

    def mark_volatile(self) -> None:
        """This answer shows live process state (health, breakers): never cache it."""
        if self.reads is not None:
            self.reads.volatile = True


def build_context(
    services: Services, *, request_id: str | None = None, arrived: float | None = None, reads: ReadLog | None = None
) -> GatewayContext:
    """``arrived`` (monotonic) starts the deadline when the request reached us, not
    when the GraphQL layer got to it: time queued counts too."""
    budget_s = services.settings.request_deadline_ms / 1000
    clock = services.clock
    deadline = Deadline(arrived + budget_s, clock) if arrived is not None else Deadline.after(budget_s, clock)
    outcomes: list[SourceOutcome] = []
    loaders = Loaders.create(services.settings, services.source_service, deadline, outcomes=outcomes, reads=reads)
    edge = services.settings.edge
    ctx = GatewayContext(
        services,
        loaders,
        deadline,
        outcomes=outcomes,
        meter=CostMeter(edge.max_query_cost, edge.max_upstream_fetches),
        reads=reads,
    )
    if request_id:
        ctx.request_id = request_id
    return ctx
