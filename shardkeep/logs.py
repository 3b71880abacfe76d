"""Structured JSON logs (structlog) for the service processes.

Log events carry ids (request, room, ceremony, wallet), sizes and hashes, never
payloads. As a second line of defence, fields whose names suggest secret
material are replaced by "<redacted>" before rendering.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
import structlog.tracebacks

SECRET_FIELD_WORDS = ("secret", "private", "seed", "plaintext", "password", "passcode", "token")


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for name in list(event):
        if any(word in name.lower() for word in SECRET_FIELD_WORDS):
            event[name] = "<redacted>"
    return event


def configure(component: str, level: int = logging.INFO, stream: TextIO = sys.stderr) -> None:
    """Render every log event of this process as one JSON line on ``stream``."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            # Tracebacks without frame locals: locals may hold secrets.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(component=component)
