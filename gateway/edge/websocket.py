"""graphql-transport-ws at ``/graphql``: Strawberry's handler, with the edge's rules.

The gate never sees WebSocket messages, so what it enforces on HTTP is decided here
for each ``subscribe`` message before Strawberry runs it:

- only subscriptions: queries and mutations go over HTTP, where they are costed,
  charged, cached and coalesced (``BAD_REQUEST`` otherwise);
- with GATEWAY_PERSISTED_ONLY, only the text of a trusted document
  (``PERSISTED_QUERY_REQUIRED`` otherwise).

The subscription itself is charged when it starts (``websocket_charge``) and counted
against the client's cap, like one over SSE.
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage

from gateway.errors import DatabaseUnavailable
from gateway.persisted import PersistedDocuments, document_id


def transport_ws_handler(
    persisted: PersistedDocuments, *, persisted_only: bool, max_tokens: int
) -> type[BaseGraphQLTransportWSHandler[Any, Any]]:
    class GatewayTransportWSHandler(BaseGraphQLTransportWSHandler[Any, Any]):
        async def handle_subscribe(self, message: SubscribeMessage) -> None:
            refusal = await self._refusal(message)
            if refusal is None:
                await super().handle_subscribe(message)
                return
            code, text = refusal
            await self.send_message(
                {"id": message["id"], "type": "error", "payload": [{"message": text, "extensions": {"code": code}}]}
            )

        async def _refusal(self, message: SubscribeMessage) -> tuple[str, str] | None:
            payload = message.get("payload") or {}
            query = payload.get("query")
            if not isinstance(query, str):
                return None  # Strawberry answers the malformed message itself
            try:
                document = parse(query, max_tokens=max_tokens)
            except GraphQLError:
                return None  # a syntax error: Strawberry reports it in the usual shape
            name = payload.get("operationName")
            ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)
                   and (name is None or (d.name is not None and d.name.value == name))]
            if len(ops) == 1 and ops[0].operation is not OperationType.SUBSCRIPTION:
                return "BAD_REQUEST", f"{ops[0].operation.value}s go over HTTP (POST /graphql); WebSockets carry subscriptions"
            if persisted_only:
                services = getattr(self.context, "services", None)
                try:
                    known = await persisted.get(services.db if services else None, document_id(query), trusted_only=True)
                except DatabaseUnavailable:
                    return "SERVICE_UNAVAILABLE", "persisted documents are unavailable; retry"
                if known is None:
                    return "PERSISTED_QUERY_REQUIRED", "this gateway runs trusted documents only"
            return None

    return GatewayTransportWSHandler
