"""Persisted documents: Apollo APQ and trusted documents, stored in Postgres.

::

    HTTP ─► ResponseCacheMiddleware ─► PersistedDocumentsMiddleware ─► CoalesceIdentical ─► GraphQL
                                         documentId / extensions.persistedQuery ─► the text

- **Trusted documents**: ``{"documentId": "sha256:<hex>", "variables": ...}`` (POST body
  or GET query parameters). Loaded from client build manifests with
  ``gateway persisted add FILE``: GraphQL Code Generator's client-preset
  ``persisted-documents.json`` (``{"<sha256 hex>": "<document>"}``) or Apollo's
  persisted query manifest (``{"format": "apollo-persisted-query-manifest", ...}``).
- **APQ** (Apollo automatic persisted queries): ``extensions.persistedQuery
  {version: 1, sha256Hash}``; the hash alone -> the stored text, or
  ``PERSISTED_QUERY_NOT_FOUND`` (HTTP 200, as Apollo clients expect, so they resend
  with the text); text plus hash -> the hash is checked and the text registered.
  Registrations are bounded (``GATEWAY_PERSISTED_MAX`` documents in all).
- ``GATEWAY_PERSISTED_ONLY=true``: only trusted documents run; anything else gets
  ``PERSISTED_QUERY_REQUIRED`` (and APQ registration is off).

Both kinds share one table and one id space (``sha256:<hex>`` of the exact text), so
every replica sees every document. Lookups are cached in a bounded in-process LRU
(positive answers only: a miss may be registered a moment later, by any replica).
Hand-written: Strawberry has neither (strawberry#1707).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.edge.gate import RESOLVED_QUERY
from gateway.edge.streams import replay_then
from gateway.errors import ConfigError, DatabaseUnavailable
from gateway.store import persisted as persisted_queries
from gateway.store.db import Database

log = logging.getLogger("gateway.persisted")

#: Documents whose text is kept in memory per process.
MEMORY_DOCUMENTS = 2048
#: Longest wait for the database to answer a lookup or take a registration.
DB_TIMEOUT_S = 1.0
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
APOLLO_MANIFEST_FORMAT = "apollo-persisted-query-manifest"


def document_id(text: str) -> str:
    """``sha256:<hex>`` of the document's exact UTF-8 text."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def normalise_id(raw: str) -> str | None:
    """``sha256:<hex>`` or a bare 64-digit hex hash -> ``sha256:<hex>``; None if neither."""
    hexpart = raw.removeprefix("sha256:").lower()
    return "sha256:" + hexpart if _HEX64.match(hexpart) else None


@dataclass(frozen=True, slots=True)
class ManifestDocument:
    id: str
    body: str
    name: str | None = None


def parse_manifest(data: Any, *, origin: str) -> list[ManifestDocument]:
    """Documents of a client-preset ``persisted-documents.json`` or an Apollo persisted
    query manifest, each hash checked against its text."""
    where = f"manifest {origin}"
    docs: list[ManifestDocument] = []
    if isinstance(data, dict) and data.get("format") == APOLLO_MANIFEST_FORMAT:
        if data.get("version") != 1:
            raise ConfigError(f"{where}: only version 1 of {APOLLO_MANIFEST_FORMAT} is known, got {data.get('version')!r}")
        operations = data.get("operations")
        if not isinstance(operations, list):
            raise ConfigError(f"{where}: 'operations' must be a list")
        for i, op in enumerate(operations):
            if not isinstance(op, dict) or not isinstance(op.get("id"), str) or not isinstance(op.get("body"), str):
                raise ConfigError(f"{where}: operation #{i + 1} needs string 'id' and 'body'")
            docs.append(_checked(where, op["id"], op["body"], op.get("name") if isinstance(op.get("name"), str) else None))
    elif isinstance(data, dict) and data and all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        for key, body in data.items():
            docs.append(_checked(where, key, body, None))
    else:
        raise ConfigError(
            f"{where}: not a GraphQL Code Generator persisted-documents.json (an object of hash -> document) "
            f"nor an Apollo persisted query manifest (format {APOLLO_MANIFEST_FORMAT!r})"
        )
    return docs


def _checked(where: str, raw_id: str, body: str, name: str | None) -> ManifestDocument:
    doc_id = normalise_id(raw_id)
    if doc_id is None:
        hint = " (a sha1 hash? set hashAlgorithm: 'sha256' in the codegen config)" if len(raw_id) == 40 else ""
        raise ConfigError(f"{where}: {raw_id!r} is not a sha256 hash{hint}")
    if document_id(body) != doc_id:
        raise ConfigError(f"{where}: the hash {raw_id!r} does not match its document's text")
    return ManifestDocument(doc_id, body, name)


class PersistedDocuments:
    """Lookups and registrations, through a bounded in-memory LRU to Postgres."""

    def __init__(self, *, max_documents: int, memory: int = MEMORY_DOCUMENTS) -> None:
        self.max_documents = max_documents
        self._memory: OrderedDict[str, tuple[str, bool]] = OrderedDict()
        self._capacity = memory
        self.lookups = 0  # database lookups
        self.registered = 0

    def _remember(self, doc_id: str, body: str, trusted: bool) -> None:
        self._memory[doc_id] = (body, trusted)
        self._memory.move_to_end(doc_id)
        while len(self._memory) > self._capacity:
            self._memory.popitem(last=False)

    async def get(self, db: Database | None, doc_id: str, *, trusted_only: bool) -> str | None:
        found = self._memory.get(doc_id)
        if found is not None and (found[1] or not trusted_only):
            self._memory.move_to_end(doc_id)
            return found[0]
        if db is None:
            return None
        self.lookups += 1
        row = await db.run(lambda conn: persisted_queries.get(conn, doc_id), timeout_s=DB_TIMEOUT_S)
        if row is None:
            return None
        body, trusted = row
        self._remember(doc_id, body, trusted)
        return body if trusted or not trusted_only else None

    async def register(self, db: Database | None, doc_id: str, body: str) -> None:
        """Best effort: a full store or a database away costs the registration, not the
        answer (the client sends the text again next time)."""
        self._remember(doc_id, body, self._memory.get(doc_id, ("", False))[1])
        if db is None:
            return
        try:
            stored = await db.run(
                lambda conn: persisted_queries.register(conn, doc_id, body, self.max_documents), timeout_s=DB_TIMEOUT_S
            )
        except DatabaseUnavailable as exc:
            log.warning("persisted query not registered: %s", exc.message)
            return
        self.registered += stored


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _json_param(raw: str | None, name: str) -> Any:
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _Refusal(400, "BAD_REQUEST", f"`{name}` must be JSON") from None


class PersistedDocumentsMiddleware:
    """Turns a persisted request into a plain one (the document's text under ``query``)
    or refuses it; see the module docstring."""

    def __init__(self, app: ASGIApp, store: PersistedDocuments, *, persisted_only: bool) -> None:
        self.app = app
        self.store = store
        self.persisted_only = persisted_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "POST"):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "GET":
            qs: bytes = scope["query_string"]
            if not self.persisted_only and b"documentId" not in qs and b"extensions" not in qs:
                await self.app(scope, receive, send)  # the common case, decided without parsing
                return
            await self._get(scope, receive, send)
            return
        await self._post(scope, receive, send)

    async def _get(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        if "query" not in params and "documentId" not in params and "extensions" not in params:
            await self.app(scope, receive, send)  # the GraphiQL page, or strawberry's own 400
            return
        try:
            request: dict[str, Any] = {"query": params.get("query"), "documentId": params.get("documentId"),
                                       "extensions": _json_param(params.get("extensions"), "extensions")}
            text = await self._resolve(scope, request)
        except _Refusal as refusal:
            await _refuse(send, refusal)
            return
        if text is not None and params.get("query") != text:
            # The gate reads the text from here; the query string stays as sent (no
            # re-encoding of the whole document into it, request after request).
            scope = dict(scope)
            scope[RESOLVED_QUERY] = text
        await self.app(scope, receive, send)

    async def _post(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if not self.persisted_only and b'"documentId"' not in body and b'"persistedQuery"' not in body:
            await self.app(scope, replay_then(body, receive), send)  # the common case, decided without parsing
            return
        try:
            request = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            request = None  # not JSON (form data, a typo): strawberry answers it
        if isinstance(request, dict):
            try:
                text = await self._resolve(scope, request)
            except _Refusal as refusal:
                await _refuse(send, refusal)
                return
            if text is not None and request.get("query") != text:
                request["query"] = text
                request.pop("documentId", None)
                body = orjson.dumps(request)
        await self.app(scope, replay_then(body, receive), send)

    async def _resolve(self, scope: Scope, request: Mapping[str, Any]) -> str | None:
        """The document's text for a persisted request; None: a plain request, passed on."""
        db = _database(scope)
        query = request.get("query")
        raw_id = request.get("documentId")
        extensions = request.get("extensions")
        apq = extensions.get("persistedQuery") if isinstance(extensions, dict) else None
        if raw_id is not None:
            doc_id = normalise_id(raw_id) if isinstance(raw_id, str) else None
            if doc_id is None:
                raise _Refusal(400, "BAD_REQUEST", "`documentId` must be sha256:<64 hex digits>")
            try:
                text = await self.store.get(db, doc_id, trusted_only=True)
            except DatabaseUnavailable:
                raise _Refusal(503, "SERVICE_UNAVAILABLE", "persisted documents are unavailable; retry") from None
            if text is None:
                raise _Refusal(400, "PERSISTED_QUERY_NOT_FOUND", f"no trusted document {doc_id}")
            return text
        if apq is not None:
            if not isinstance(apq, dict) or apq.get("version") != 1 or not isinstance(apq.get("sha256Hash"), str):
                raise _Refusal(400, "BAD_REQUEST", "extensions.persistedQuery needs version 1 and a sha256Hash")
            doc_id = normalise_id(apq["sha256Hash"])
            if doc_id is None or apq["sha256Hash"].startswith("sha256:"):
                raise _Refusal(400, "BAD_REQUEST", "persistedQuery.sha256Hash must be 64 hex digits")
            if isinstance(query, str):
                if document_id(query) != doc_id:
                    raise _Refusal(400, "PERSISTED_QUERY_HASH_MISMATCH", "provided sha256Hash does not match the query")
                if self.persisted_only:
                    known = await self._lookup(db, doc_id)
                    if known is None:
                        raise _Refusal(400, "PERSISTED_QUERY_REQUIRED", "this gateway runs trusted documents only")
                    return known
                await self.store.register(db, doc_id, query)
                return query
            text = await self._lookup(db, doc_id)
            if text is None:
                # Apollo clients resend with the text on this exact message and code.
                raise _Refusal(200, "PERSISTED_QUERY_NOT_FOUND", "PersistedQueryNotFound")
            return text
        if self.persisted_only:
            raise _Refusal(400, "PERSISTED_QUERY_REQUIRED", "this gateway runs persisted documents only: send a "
                           "`documentId` (or an APQ hash) of a trusted document")
        return None

    async def _lookup(self, db: Database | None, doc_id: str) -> str | None:
        try:
            return await self.store.get(db, doc_id, trusted_only=self.persisted_only)
        except DatabaseUnavailable:
            return None  # the client resends the text, which runs (unless persisted-only)


def _database(scope: Scope) -> Database | None:
    state = scope.get("state") or {}
    services = state.get("services")
    return services.db if services is not None else None




async def _refuse(send: Send, refusal: _Refusal) -> None:
    payload = orjson.dumps({"errors": [{"message": refusal.message, "extensions": {"code": refusal.code}}]})
    await send({
        "type": "http.response.start",
        "status": refusal.status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                    (b"cache-control", b"no-store")],
    })
    await send({"type": "http.response.body", "body": payload, "more_body": False})


async def add_manifest(db: Database, docs: list[ManifestDocument], *, max_documents: int) -> tuple[int, int]:
    """Store trusted documents (one transaction); refuses to grow past ``max_documents``."""

    async def run(conn: Any) -> tuple[int, int]:
        async with conn.transaction():
            result = await persisted_queries.add_trusted(conn, [(d.id, d.body, d.name) for d in docs])
            total, _ = await persisted_queries.count(conn)
            if total > max_documents:
                raise ConfigError(
                    f"{total} persisted documents would exceed GATEWAY_PERSISTED_MAX={max_documents}; nothing added"
                )
            return result

    return await db.run(run, timeout_s=30)
