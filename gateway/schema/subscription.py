"""The root ``Subscription`` type: live updates of new articles (see gateway/live.py).

Served over GraphQL over SSE (``Accept: text/event-stream``, each event's SSE ``id``
its cursor, ``Last-Event-ID`` resumes) and graphql-transport-ws (a WebSocket at
``/graphql``; resume with ``after:``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated, Any

import orjson
import strawberry
from graphql import ExecutionResult as GraphQLExecutionResult

from gateway.errors import BadUserInput
from gateway.schema.fastexec import FastExecutor
from gateway.schema.types import Article, Info

MAX_SOURCES_ARG = 50


@strawberry.type(description="An article new to the gateway, pushed to a live subscription.")
class ArticleAddedEvent:
    cursor: strawberry.ID = strawberry.field(
        description="This event's place in the gateway's sequence of new articles: a decimal number, increasing "
        "with every article new to the gateway, in every process. Over SSE it is also the event's `id`. "
        "Resume after it with `articleAdded(after:)` or the SSE `Last-Event-ID` header."
    )
    article: Article = strawberry.field(description="The article.")
    gap: bool = strawberry.field(
        description="True on the first event of a resumed subscription when articles between the resume cursor "
        "and this one were not replayed (more than the replay window, GATEWAY_SUBSCRIPTION_REPLAY_MAX): "
        "query `articles` to fill the gap. False otherwise."
    )
    #: Shared by every subscriber the event goes to (see SharedEventExecution).
    memo: strawberry.Private[dict[object, object]]


class SharedEventExecution(FastExecutor):
    """graphql-core executes a subscription's selection once per event and
    subscriber. An event's answer depends on the event, the document and its
    variables only (Article fields read the article; `source` the settings), so
    subscribers with the same document and variables share one execution of it:
    fan-out to a thousand subscribers of one document is one execution, not a
    thousand. Memoised on the event's payload, so it lives as long as the event.
    On top of the FastExecutor every operation uses."""

    def execute_operation(self, serially: bool | None = None) -> Any:
        memo = getattr(self.root_value, "memo", None)
        if memo is None:
            return super().execute_operation(serially)
        try:
            key = (id(self.operation), orjson.dumps(self.variable_values.coerced, option=orjson.OPT_SORT_KEYS))
        except TypeError:
            return super().execute_operation(serially)
        hit = memo.get(key)
        if hit is not None:
            return hit[1]
        found = super().execute_operation(serially)
        if isinstance(found, GraphQLExecutionResult) and not found.errors:
            # an awaitable (comments) or an error stays each subscriber's own; the
            # operation is kept with it so that its id names it while the memo lives
            memo[key] = (self.operation, found)
        return found


SourcesArg = Annotated[
    list[strawberry.ID] | None,
    strawberry.argument(description=f"Only articles of these sources (at most {MAX_SOURCES_ARG}); all when omitted."),
]
AfterArg = Annotated[
    strawberry.ID | None,
    strawberry.argument(
        description="Resume: first replay the articles after this cursor (the `cursor` of the last event seen), "
        "then go on live. Over SSE, a `Last-Event-ID` header takes precedence. Omitted: only new articles."
    ),
]


def _sources(info: Info, ids: list[strawberry.ID] | None) -> list[str] | None:
    if ids is None:
        return None
    if len(ids) > MAX_SOURCES_ARG:
        raise BadUserInput(f"`sources` takes at most {MAX_SOURCES_ARG} ids, got {len(ids)}")
    known = {s.id for s in info.context.services.settings.sources}
    unknown = [str(i) for i in ids if i not in known]
    if unknown:
        raise BadUserInput(f"unknown source(s): {', '.join(unknown[:5])}")
    return list(dict.fromkeys(str(i) for i in ids))


def parse_cursor(raw: str | None, *, name: str) -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise BadUserInput(f"`{name}` must be the cursor of an event (a decimal number), got {raw[:40]!r}")
    return int(text)


@strawberry.type(description="Live updates, over GraphQL over SSE or graphql-transport-ws (WebSocket).")
class Subscription:
    @strawberry.subscription(
        description="Every article new to the gateway from now on (or after `after`), once each, in order. "
        "Sources with subscribers are refreshed at their TTL by the gateway itself, so an article arrives "
        "within about one TTL of its upstream publishing it. Ends with an error coded SLOW_CONSUMER when "
        "this subscriber falls too far behind (resume from its last cursor), SHUTTING_DOWN when the "
        "process stops; refused with TOO_MANY_SUBSCRIPTIONS or RATE_LIMITED."
    )
    async def article_added(
        self, info: Info, sources: SourcesArg = None, after: AfterArg = None
    ) -> AsyncGenerator[ArticleAddedEvent, None]:
        ctx = info.context
        source_ids = _sources(info, sources)
        resume = parse_cursor(ctx.last_event_id, name="Last-Event-ID") if ctx.last_event_id else None
        if resume is None:
            resume = parse_cursor(after, name="after")
        if ctx.charge_subscription is not None:
            ctx.charge_subscription()  # a WebSocket's subscribe message: the gate charges SSE requests
        hub = ctx.services.live
        assert hub is not None
        sub = hub.admit(ctx.client_id or "anonymous", source_ids)
        try:
            async for event in hub.events(sub, resume):
                ctx.live_cursor = str(event.seq)
                ctx.renew_for_event()
                payload = event.memo.get(ArticleAddedEvent)
                if payload is None:
                    payload = event.memo[ArticleAddedEvent] = ArticleAddedEvent(
                        cursor=strawberry.ID(str(event.seq)),
                        article=event.article,  # type: ignore[arg-type]  # Article fields read NormalizedArticle
                        gap=event.gap,
                        memo=event.memo,
                    )
                yield payload
        finally:
            hub.release(sub)
