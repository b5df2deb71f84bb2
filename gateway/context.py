"""The per-request GraphQL context: process services, fresh loaders, a deadline."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.loaders import Loaders
from gateway.resilience.deadline import Deadline

if TYPE_CHECKING:
    from gateway.documents import CachedDocument
    from gateway.respcache import ReadLog
    from gateway.services import Services


@dataclass(slots=True)
class GatewayContext:
    services: Services
    loaders: Loaders
    deadline: Deadline
    #: The client's X-Request-Id, else one made up when first asked for (errors only).
    given_request_id: str | None = None
    #: What this answer read (source keys, freshness, ages), for the response cache
    #: and Cache-Control; None when nothing records it.
    reads: ReadLog | None = None
    #: The parsed document's cache entry (see :mod:`gateway.documents`).
    document: CachedDocument | None = None

    @property
    def request_id(self) -> str:
        if self.given_request_id is None:
            self.given_request_id = uuid.uuid4().hex
        return self.given_request_id

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
    deadline = Deadline(arrived + budget_s) if arrived is not None else Deadline.after(budget_s)
    return GatewayContext(
        services, Loaders(services.source_service, deadline, reads), deadline,
        given_request_id=request_id or None, reads=reads,
    )
