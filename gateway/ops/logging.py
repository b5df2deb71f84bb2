"""Logs through structlog: one JSON object per line when stderr is not a terminal
(``GATEWAY_LOG_FORMAT=json|console|auto``), readable lines when it is.

The standard library's records (uvicorn, asyncpg, our own ``logging`` loggers) go
through the same formatter, so every line has the same shape. Records are handed to
a queue and formatted and written by a thread (the standard library's
``QueueHandler``/``QueueListener``): a request's log line costs the event loop an
enqueue, not a JSON encoding and a blocking write to stderr.

Logging is configured once per process (``gateway serve`` calls it in every worker);
it is the one piece of process-wide state, as the standard library's logging is.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
from typing import Any

import orjson
import structlog

#: Loggers that come with their own handlers; theirs are replaced by ours. (Not
#: uvicorn.access: uvicorn itself decides whether access lines are written at all.)
THIRD_PARTY = ("uvicorn", "uvicorn.error", "asyncpg")
QUEUE_SIZE = 10_000

_listener: logging.handlers.QueueListener | None = None


class _Enqueue(logging.handlers.QueueHandler):
    """Hands the record over as it is: the formatter (in the listener's thread) needs
    structlog's event dict, which the default ``prepare`` would turn into a string."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:  # never block the event loop for a log line
            pass


def _drop_color_message(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    event.pop("color_message", None)  # uvicorn's ANSI-coloured copy of the message
    return event


def _dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def use_json(log_format: str, stream: Any = None) -> bool:
    stream = sys.stderr if stream is None else stream
    return log_format == "json" or (log_format == "auto" and not stream.isatty())


def configure(log_format: str, level: str = "INFO", *, stream: Any = None) -> None:
    """Set up structlog and the standard library's root logger for this process;
    lines go to ``stream`` (default: stderr)."""
    stream = sys.stderr if stream is None else stream
    global _listener
    shared: list[Any] = [
        _drop_color_message,
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    json = use_json(log_format, stream)
    renderer: Any = structlog.processors.JSONRenderer(serializer=_dumps) if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_color_message],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if json else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
    )
    out = logging.StreamHandler(stream)
    out.setFormatter(formatter)
    if _listener is None:
        atexit.register(_stop)
    else:
        _listener.stop()
    records: queue.Queue[logging.LogRecord] = queue.Queue(QUEUE_SIZE)
    _listener = logging.handlers.QueueListener(records, out, respect_handler_level=False)
    _listener.start()
    root = logging.getLogger()
    root.handlers = [_Enqueue(records)]
    root.setLevel(level.upper())
    for name in THIRD_PARTY:
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs initdb's whole output at INFO


def _stop() -> None:
    global _listener
    if _listener is not None:
        _listener.stop()  # flushes what is queued
        _listener = None
