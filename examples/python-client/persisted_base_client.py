"""A base client for ariadne-codegen that sends trusted documents by id.

ariadne-codegen copies this file into the generated package (``base_client_file_path``
in ``ariadne-codegen.toml``). Instead of the document's text, each request carries
``documentId: "sha256:<hex>"`` of the exact text the generated method holds; the
gateway (``GATEWAY_PERSISTED_ONLY=true``) runs only documents loaded with
``gateway persisted add persisted-documents.json`` (see ``build_manifest.py``).
"""

from __future__ import annotations

import hashlib
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
