"""Client identity: who a request is charged to.

- ``X-Api-Key: <key>`` or ``Authorization: Bearer <key>``: the client whose SHA-256
  matches in the clients file; an unknown key is 401 ``UNAUTHENTICATED``.
- WebSockets (subscriptions) the same way, from the handshake's headers (refused
  handshakes get 403), or from ``{"apiKey": ...}`` in graphql-transport-ws's
  ``connection_init`` payload, which is all a browser can send (see app.py).
- No key: anonymous, keyed by client IP (an IPv6 address by its /64; refused when
  ``require_api_key``). The IP is
  the peer's, unless the peer is a trusted proxy: then the nearest untrusted address
  of ``Forwarded`` / ``X-Forwarded-For``, read right to left. From an untrusted peer
  those headers are ignored, so rotating them cannot mint new identities.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.edge.clients import Network, hash_key, parse_cidrs
from gateway.edge.responses import send_error
from gateway.settings import ClientConfig, EdgeSettings

CLIENT = "gateway.edge.client"


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    id: str  # "key:<client id>" or "ip:<address>"
    authenticated: bool
    burst: int | None = None  # own limits from the clients file; None: the defaults
    per_s: float | None = None


class ClientIdentityMiddleware:
    def __init__(self, app: ASGIApp, *, edge: EdgeSettings) -> None:
        self.app = app
        self.require_key = edge.require_api_key
        self.by_hash: dict[str, ClientConfig] = {c.key_sha256: c for c in edge.clients}
        self.trusted: tuple[Network, ...] = parse_cidrs(edge.trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            send = _refusing_handshake(send)  # a WebSocket is refused before it is accepted
        key = _presented_key(scope)
        if key is not None:
            client = self._client_of(key)
            if client is None and not _needs_identity(scope):
                client_free = ClientIdentity(f"ip:{anonymous_key(self.client_ip(scope))}", False)
                scope[CLIENT] = client_free  # a probe or a static file: the key does not matter here
                await self.app(scope, receive, send)
                return
            if client is None:
                await send_error(
                    send, 401, "UNAUTHENTICATED", "unknown API key", headers=[(b"www-authenticate", b"Bearer")]
                )
                return
            scope[CLIENT] = ClientIdentity(f"key:{client.id}", True, client.burst, client.per_s)
        elif self.require_key and _needs_identity(scope):
            await send_error(
                send, 401, "UNAUTHENTICATED", "an API key is required (X-Api-Key or Authorization: Bearer)",
                headers=[(b"www-authenticate", b"Bearer")],
            )
            return
        else:
            scope[CLIENT] = ClientIdentity(f"ip:{anonymous_key(self.client_ip(scope))}", False)
        await self.app(scope, receive, send)

    def _client_of(self, key: str) -> ClientConfig | None:
        digest = hash_key(key)
        client = self.by_hash.get(digest)
        # The dict lookup already found it by the full digest; compare in constant
        # time anyway so that the answer's timing says nothing about near misses.
        if client is not None and hmac.compare_digest(client.key_sha256, digest):
            return client
        return None

    def client_ip(self, scope: Scope) -> str:
        peer = (scope.get("client") or ("unknown", 0))[0]
        if not self.trusted or not self._is_trusted(peer):
            return peer
        hops = _forwarded_for(scope)
        for hop in reversed(hops):  # nearest first: the last entry was added by our proxy
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)


@functools.lru_cache(maxsize=4096)  # the same few addresses arrive over and over
def anonymous_key(address: str) -> str:
    """An IPv4 address as is; an IPv6 address by its /64, which one subscriber usually
    holds whole (rotating within it must not buy new buckets)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _header(scope: Scope, name: bytes) -> str | None:
    values = [v for k, v in scope["headers"] if k == name]
    if not values:
        return None
    return b",".join(values).decode("latin-1")


def _presented_key(scope: Scope) -> str | None:
    key = _header(scope, b"x-api-key")
    if key is not None and key.strip():
        return key.strip()
    auth = _header(scope, b"authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def client_for_key(edge: EdgeSettings, key: str) -> ClientIdentity | None:
    """The API client a key belongs to (for a key presented outside the headers: a
    WebSocket's ``connection_init`` payload), or None."""
    digest = hash_key(key)
    for client in edge.clients:
        if hmac.compare_digest(client.key_sha256, digest):
            return ClientIdentity(f"key:{client.id}", True, client.burst, client.per_s)
    return None


def _refusing_handshake(send: Send) -> Send:
    """``send_error`` for a WebSocket handshake: a close before the accept, which the
    server answers with 403 (the reason goes to the log line, not to the client)."""

    async def refuse(message: Message) -> None:
        if message["type"] == "http.response.start":
            await send({"type": "websocket.close", "code": 1008, "reason": "unauthenticated"})
        elif message["type"] != "http.response.body":
            await send(message)

    return refuse


def _needs_identity(scope: Scope) -> bool:
    # Health probes, GraphiQL's page and its static files are not charged and need no key.
    if scope.get("path") != "/graphql":
        return False
    if scope["type"] == "websocket":
        return True
    is_page = scope["method"] == "GET" and b"query=" not in scope.get("query_string", b"")
    return not (is_page and "text/html" in (_header(scope, b"accept") or ""))


def _forwarded_for(scope: Scope) -> list[str]:
    """Addresses from ``Forwarded`` (RFC 7239) if present, else ``X-Forwarded-For``."""
    forwarded = _header(scope, b"forwarded")
    hops: list[str] = []
    if forwarded:
        for element in forwarded.split(","):
            for pair in element.split(";"):
                name, _, value = pair.strip().partition("=")
                if name.lower() == "for" and value:
                    hops.append(_strip_node(value.strip().strip('"')))
        return [h for h in hops if h]
    xff = _header(scope, b"x-forwarded-for")
    if xff:
        hops = [_strip_node(h.strip()) for h in xff.split(",")]
    return [h for h in hops if h]


def _strip_node(node: str) -> str:
    """``[2001:db8::1]:4711`` -> ``2001:db8::1``; ``192.0.2.1:80`` -> ``192.0.2.1``."""
    if node.startswith("["):
        return node[1 : node.find("]")] if "]" in node else node
    if node.count(":") == 1:
        return node.split(":", 1)[0]
    return node
