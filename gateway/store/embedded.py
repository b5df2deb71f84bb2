"""An embedded PostgreSQL (the ``pgserver`` package) for laptops, demos and tests.

pgserver ships real PostgreSQL binaries in a wheel. It keeps a per-data-dir list of
the processes using a server and stops it when the last one lets go, so several
workers sharing one data dir is safe. Its calls are blocking (initdb, pg_ctl), so
they run in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

log = logging.getLogger("gateway.store")


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "pgdata").resolve()
        self._server: Any = None

    @property
    def url(self) -> str:
        assert self._server is not None, "embedded postgres not started"
        return str(self._server.get_uri())

    def start_sync(self) -> str:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI);
            # pgserver then falls back to a /tmp path, which is what we want.
            warnings.simplefilter("ignore", UserWarning)
            import pgserver

            try:
                self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
            except Exception as exc:  # initdb/pg_ctl failures surface as many types
                raise ConfigError(
                    f"embedded PostgreSQL failed to start in {self.pgdata}: {exc}. "
                    f"See {self.pgdata / 'log'}, or set GATEWAY_DATABASE_URL."
                ) from exc
        log.info("embedded postgres ready at %s", self.pgdata)
        return self.url

    def stop_sync(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    async def start(self) -> str:
        return await asyncio.to_thread(self.start_sync)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)
