"""Logging, configured once per process: structlog rendering JSON in Azure and readable lines
locally, through the standard `logging` module (which the Functions worker forwards).

Safety: log calls pass ids, counts and reasons, never payloads. As a second belt, the
`redact` processor replaces the value of any key that names secret or payload content.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict, WrappedLogger

_SENSITIVE = re.compile(
    r"(body|payload|prompt|completion|content|key|token|secret|password|authorization|signature|connection)",
    re.IGNORECASE,
)
# Keys that match the pattern above but carry no secret.
_ALLOWED = frozenset({"kind", "partition_key", "normalizer", "message", "event", "sequence_range"})
REDACTED = "[redacted]"


def redact(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    for key in list(event_dict):
        if key not in _ALLOWED and _SENSITIVE.search(key):
            event_dict[key] = REDACTED
    return event_dict


def configure(*, json: bool, level: str = "INFO", stream: Any = None, attributes: bool = False) -> None:
    """Set up structlog and the `aegis` stdlib logger. Later calls reconfigure (CLI options).
    `attributes`: each field as an attribute of the log record (what the OpenTelemetry handler
    sends to Application Insights as `customDimensions`), the message the event alone."""
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    if attributes:
        renderer = _as_attributes
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=False,
    )
    logger = logging.getLogger("aegis")
    logger.setLevel(level)
    for h in [h for h in logger.handlers if getattr(h, "_aegis", False)]:
        logger.removeHandler(h)
    if attributes:  # the OpenTelemetry handler ships them: the worker's root handler would send them twice
        logger.propagate = False
    elif stream is not None or not _in_functions_worker():
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._aegis = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False


def configure_from_settings(settings: Any, *, attributes: bool = False) -> None:
    if structlog.is_configured():
        return
    json = settings.log_format == "json" or (settings.log_format == "auto" and settings.in_azure)
    configure(json=json, level=settings.log_level, attributes=attributes)


def _as_attributes(logger: WrappedLogger, method: str, event_dict: EventDict) -> dict[str, Any]:
    """The stdlib call's arguments: the event as the message, every other field in `extra`, as a
    value OpenTelemetry can carry (a number, text or flag; anything else as JSON)."""
    event = str(event_dict.pop("event", ""))
    extra = {k: v if isinstance(v, str | int | float | bool) else orjson.dumps(v, default=str).decode()
             for k, v in event_dict.items() if k not in _RESERVED}  # fmt: skip
    return {"msg": event, "extra": extra}


_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _in_functions_worker() -> bool:
    # The Python worker installs its own root handler that ships records to the host.
    return "azure_functions_worker" in sys.modules or "proxy_worker" in sys.modules
