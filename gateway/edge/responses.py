"""Error answers the edge sends itself, always in the GraphQL error shape
(``{"errors": [{"message", "extensions": {"code", ...}}]}``) and always JSON."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import Send

JSON = b"application/json; charset=utf-8"
GRAPHQL_RESPONSE_JSON = b"application/graphql-response+json; charset=utf-8"


def error_body(code: str, message: str, **extensions: Any) -> bytes:
    return orjson.dumps({"errors": [{"message": message, "extensions": {"code": code, **extensions}}]})


async def send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    media_type: bytes = JSON,
    **extensions: Any,
) -> None:
    body = error_body(code, message, **extensions)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media_type),
                (b"content-length", str(len(body)).encode()),
                *(headers or ()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
