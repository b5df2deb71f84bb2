"""PostgreSQL: the pool, the embedded server, migrations, and every SQL statement.

:data:`HOT_STATEMENTS` are the statements the request path runs, each with harmless
arguments: every pooled connection runs them once when it opens (in a transaction it
rolls back), so they are prepared before the first request needs them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from gateway.store import articles, cache, leases

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NOBODY = ("", "", "")  # source id, request key, holder: matches no row

HOT_STATEMENTS: dict[str, tuple[Any, ...]] = {
    leases.READ_AND_TRY_ACQUIRE_MANY: ([], [], "", 0.0),
    leases.TRY_ACQUIRE: (*_NOBODY, 0.0),
    leases.PEER_STATE: _NOBODY[:2],
    leases.RELEASE: _NOBODY,
    leases.RELEASE_FAILED: (*_NOBODY, ""),
    cache.GET_MANY: ("", []),
    cache.PUT_REFRESHED: ("", "", {"articles": [], "dropped": 0}, _EPOCH, None, None),
    cache.PUT_ARTICLES: ("", "", [], _EPOCH),
    cache.PUT_MANY: ([], [], [], [], [], []),
    articles.GET_MANY: ([],),
}
