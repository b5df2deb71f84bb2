"""Strings Postgres cannot store, refused as BAD_USER_INPUT at the argument.

Postgres text refuses NUL, and a lone UTF-16 surrogate (which a GraphQL string
escape like ``"\\ud800"`` can produce) cannot be encoded as UTF-8 at all. Checked by
the resolver that takes the argument, so the other fields of the request still
resolve and the log gets no traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from gateway.errors import BadUserInput

_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def check_storable(name: str, value: str) -> str:
    if _UNSTORABLE.search(value):
        raise BadUserInput(f"`{name}` must not contain NUL characters or unpaired surrogates")
    return value


def check_all_storable(name: str, values: Iterable[str]) -> None:
    for value in values:
        check_storable(name, value)
