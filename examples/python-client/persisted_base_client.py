"""A base client for ariadne-codegen that sends trusted documents by id.

ariadne-codegen copies this file into the generated package (``base_client_file_path``
in ``ariadne-codegen.toml``). Instead of the document's text, each request carries
``documentId: "sha256:<hex>"`` of the exact text the generated method holds; the
gateway (``GATEWAY_PERSISTED_ONLY=true``) runs only documents loaded with
``gateway persisted add persisted-documents.json`` (see ``build_manifest.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx



class GatewayClientError(Exception):
    """The gateway refused or failed the request; ``errors`` as it sent them."""

    def __init__(self, message: str, *, status_code: int, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.errors = errors or []

    @property
    def codes(self) -> list[str]:
        return [str((e.get("extensions") or {}).get("code")) for e in self.errors]


def document_id(query: str) -> str:
    return "sha256:" + hashlib.sha256(query.encode()).hexdigest()


class PersistedBaseClient:
    def __init__(self, url: str, headers: dict[str, str] | None = None,
                 http_client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self.headers = headers or {}
        self.http_client = http_client or httpx.AsyncClient(headers=self.headers)

    async def __aenter__(self) -> PersistedBaseClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http_client.aclose()

    async def execute(self, query: str, operation_name: str | None = None,
                      variables: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        payload = {"documentId": document_id(query), "operationName": operation_name, "variables": variables or {}}
        return await self.http_client.post(self.url, json=payload, **kwargs)

    def get_data(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise GatewayClientError("not a JSON answer", status_code=response.status_code) from None
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors or not 200 <= response.status_code <= 299 or not isinstance(body, dict) or "data" not in body:
            message = "; ".join(str(e.get("message")) for e in errors or ()) or f"HTTP {response.status_code}"
            raise GatewayClientError(message, status_code=response.status_code, errors=errors)
        return cast(dict[str, Any], body["data"])

    async def execute_ws(self, query: str, operation_name: str | None = None,
                         variables: dict[str, Any] | None = None, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        """Subscriptions, by document id too, over GraphQL over SSE (``Accept:
        text/event-stream``; one connection per subscription). Yields each event's
        ``data``; an event with errors (e.g. ``SLOW_CONSUMER``) raises."""
        given = {k: v for k, v in (variables or {}).items() if type(v).__name__ != "UnsetType"}
        payload = {"documentId": document_id(query), "operationName": operation_name, "variables": given}
        headers = {"accept": "text/event-stream", **kwargs.pop("headers", {})}
        async with self.http_client.stream("POST", self.url, json=payload, headers=headers,
                                           timeout=httpx.Timeout(30, read=None), **kwargs) as response:
            if response.status_code != 200:
                await response.aread()
                self.get_data(response)  # raises with the gateway's errors
            event, data = "", []
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    continue  # a heartbeat
                if line:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        event = value
                    elif name == "data":
                        data.append(value)
                    continue
                if event == "complete":
                    return
                if event == "next":
                    body = json.loads("\n".join(data))
                    if body.get("errors"):
                        message = "; ".join(str(e.get("message")) for e in body["errors"])
                        raise GatewayClientError(message, status_code=200, errors=body["errors"])
                    yield cast(dict[str, Any], body["data"])
                event, data = "", []
