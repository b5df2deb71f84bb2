"""Logs through structlog: one JSON object per line when stderr is not a terminal
(``GATEWAY_LOG_FORMAT=json|console|auto``), readable lines when it is.

The standard library's records (uvicorn, asyncpg, our own ``logging`` loggers) go
through the same formatter, so every line has the same shape. Records are handed to
a thread that formats and writes them (:class:`_BatchWriter`): a log line costs the
event loop a deque append, not a blocking write to stderr. The line logged for every
request (``graphql.operation``) takes structlog's own fast path instead of a standard
library record (:func:`structured`): rendered by structlog's processors where it is
logged, then handed to the same thread as a finished line; in JSON, by
:func:`json_lines`, which renders the same line without the processor chain.

Logging is configured once per process (``gateway serve`` calls it in every worker);
it is the one piece of process-wide state, as the standard library's logging is.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import orjson
import structlog

#: Loggers that come with their own handlers; theirs are replaced by ours. (Not
#: uvicorn.access: uvicorn itself decides whether access lines are written at all.)
THIRD_PARTY = ("uvicorn", "uvicorn.error", "asyncpg")
#: Records waiting for the writer; beyond, new ones are dropped (never a wait).
QUEUE_SIZE = 10_000
#: The writer wakes this often and writes everything that arrived since (seconds).
WRITE_INTERVAL_S = 0.05

_listener: _BatchWriter | None = None
_json = False  # configure() chose JSON lines


class _BatchWriter(logging.Handler):
    """The root logger's one handler: ``handle`` appends the record, as it is, to a
    deque (``push`` a line structlog rendered already); a thread wakes every
    :data:`WRITE_INTERVAL_S`, formats what accumulated and writes it in one call.

    Not the standard library's QueueHandler/QueueListener, which this replaces: its
    listener is woken for every record, and on a busy 2-core machine that wake-up (the
    thread scheduled, the GIL handed over and back) cost the event loop ~100 us per
    request with one operation line each, 14% of a warm request (bench_ops_warm). Here
    a record costs one deque append (atomic, no lock, no wake-up), and the thread's
    wake-ups do not follow the traffic. Records keep their structlog event dict (no
    ``prepare``), which the formatter needs. Once stopped (at exit), records are
    written at once, by whoever logs them."""

    def __init__(self, out: logging.Handler) -> None:
        super().__init__()
        self.out = out
        self.dropped = 0
        self._pending: deque[logging.LogRecord | str] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-log-writer", daemon=True)

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        # No handler lock, no filters (none are set): one append, atomic under the GIL.
        if self._stop.is_set():
            self.out.handle(record)
        elif len(self._pending) >= QUEUE_SIZE:
            self.dropped += 1
        else:
            self._pending.append(record)
        return True

    def push(self, line: str) -> None:
        """A line rendered already (structlog's loggers, :class:`_Lines`)."""
        if self._stop.is_set():
            self.out.stream.write(line + "\n")  # type: ignore[attr-defined]
        elif len(self._pending) >= QUEUE_SIZE:
            self.dropped += 1
        else:
            self._pending.append(line)  # type: ignore[arg-type]

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() is overridden
        self.handle(record)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is pending and stop the thread."""
        self._stop.set()
        self._thread.join()
        self._write()

    def _run(self) -> None:
        while not self._stop.wait(WRITE_INTERVAL_S):
            self._write()

    def _write(self) -> None:
        pending = self._pending
        if not pending:
            return
        lines = []
        record = None
        while pending:
            record = pending.popleft()
            if isinstance(record, str):
                lines.append(record + "\n")
                continue
            try:
                lines.append(self.out.format(record) + "\n")
            except Exception:  # noqa: BLE001 - one bad record must not cost the others
                self.out.handleError(record)
        try:
            stream = self.out.stream  # type: ignore[attr-defined]
            stream.write("".join(lines))
            stream.flush()
        except Exception:  # noqa: BLE001 - e.g. stderr closed: as the standard library's handlers do
            self.out.handleError(record if isinstance(record, logging.LogRecord) else logging.makeLogRecord({"msg": record}))


def _drop_color_message(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    event.pop("color_message", None)  # uvicorn's ANSI-coloured copy of the message
    return event


class _Lines:
    """The logger behind structlog's loggers (its ``logger_factory``): each line,
    rendered by structlog's processors in the caller's thread, goes to the writer as it
    is: no standard-library record is made, and the thread has nothing left to format."""

    def __init__(self, name: str, writer: _BatchWriter) -> None:
        self.name = name  # for structlog.stdlib.add_logger_name
        self._writer = writer

    def msg(self, message: str) -> None:
        self._writer.push(message)

    debug = info = warning = warn = error = critical = exception = fatal = msg


_structured: dict[str, Any] = {}  # structlog loggers by name
_json_writers: dict[str, Callable[[str, dict[str, Any]], None]] = {}  # json_lines() by name


def structured(name: str) -> Any | None:
    """A structlog logger named ``name`` writing through this process's writer thread,
    or None when :func:`configure` has not run here (a test, an embedding app): then
    log through the standard library, as an unconfigured structlog would print to
    stdout. Its level is the root logger's, as :func:`configure` set it."""
    if _listener is None:
        return None
    found = _structured.get(name)
    if found is None:
        # bind(): the logger itself, not a lazy proxy looking it up on every call
        found = _structured[name] = structlog.get_logger(name).bind()
    return found


def json_lines(name: str) -> Callable[[str, dict[str, Any]], None] | None:
    """For the line logged with every request, when this process writes JSON: a function
    ``write(event, fields)`` that renders the line exactly as the structlog chain
    :func:`configure` sets up renders ``logger.info(event, **fields)`` (the fields, then
    ``event``, ``level``, ``logger`` and ``timestamp``; a test holds the two together)
    and hands it to the writer. Half the cost of the chain (about 7 µs a line instead
    of 15), which a warm request pays once. None for console lines or when logging is
    not configured here: then use :func:`structured`. The caller checks the level."""
    writer = _listener
    if writer is None or not _json:
        return None
    found = _json_writers.get(name)
    if found is None:

        def write(event: str, fields: dict[str, Any]) -> None:
            fields["event"] = event
            fields["level"] = "info"
            fields["logger"] = name
            fields["timestamp"] = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")  # as TimeStamper
            writer.push(_dumps(fields))

        found = _json_writers[name] = write
    return found


def _stamp_from_record(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """The standard library record's own time (as structlog's TimeStamper writes it),
    not the writer's: records are formatted in batches, up to WRITE_INTERVAL_S later."""
    record = event.get("_record")
    if record is not None:
        event["timestamp"] = datetime.fromtimestamp(record.created, timezone.utc).isoformat().replace("+00:00", "Z")
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
    global _listener, _json
    # (No contextvars merging: nothing binds any, and in the writer's thread it would
    # see that thread's context, not the request's.)
    shared: list[Any] = [_drop_color_message, structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name]
    json = _json = use_json(log_format, stream)
    renderer: Any = structlog.processors.JSONRenderer(serializer=_dumps) if json else structlog.dev.ConsoleRenderer()
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _stamp_from_record, structlog.stdlib.ExtraAdder(), _drop_color_message],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if json else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
    )
    out = logging.StreamHandler(stream)
    out.setFormatter(formatter)
    if _listener is None:
        atexit.register(shutdown)
    else:
        _listener.stop()
    _listener = _BatchWriter(out)
    _listener.start()
    writer = _listener
    _structured.clear()
    _json_writers.clear()
    structlog.configure(
        processors=[
            *shared[1:],  # (color_message comes from uvicorn's records only)
            structlog.processors.TimeStamper(fmt="iso", utc=True),  # in the caller's thread, when logged
            structlog.processors.format_exc_info if json else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
        logger_factory=lambda name="gateway", *args: _Lines(name, writer),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )
    # Records skip what no line shows (the logging HOWTO's "Optimization"): thread and
    # process names, looked up for every record otherwise.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers = [_listener]
    root.setLevel(level.upper())
    for name in THIRD_PARTY:
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs initdb's whole output at INFO


def shutdown() -> None:
    """Write what is queued and stop the writing thread (registered to run at exit)."""
    global _listener
    if _listener is not None:
        _listener.stop()  # flushes what is queued
        _listener = None
        _structured.clear()
        _json_writers.clear()
