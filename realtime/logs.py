"""Logging: lines for humans, or one JSON object per line for a log collector
(`PROCRECHE_LOG_FORMAT`), and the redaction every record goes through.

What must never reach a log: message contents, passwords, session tokens, invitation
tokens and the signatures of file links. procreche's own log calls name ids, never bodies
or secrets; what remains are URLs, which uvicorn's access log (and its WebSocket handshake
lines, and our HTTP error handler) record as requested. So every record's text is passed
through `redact`: query strings are dropped (the `signature` of `/media/files/…` links,
S3's `X-Amz-Signature`, anything a client puts there), and the path segment that is a secret —
the token of `/api/invitations/<token>`, and of the web app's `#/invite/<token>` links —
is replaced by `<redacted>`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
REDACTED = "<redacted>"

# Loggers that record request paths as requested: uvicorn's access log and WebSocket handshakes,
# the HTTP error handler (gateway/problems.py).
URL_LOGGERS = ("uvicorn.access", "uvicorn.error", "procreche.http")

# A path's query string: from `?` up to the next blank or quote.
_QUERY = re.compile(r"(/[^\s?\"']*)\?[^\s\"']*")
# Path segments that are secrets themselves: an invitation's token (API and web app link).
_SECRET_SEGMENT = re.compile(r"(/api/invitations/|#/invite/)[^/\s?#\"']+")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")


def redact(text: str) -> str:
    """`text` without query strings, secret path segments and bearer tokens."""
    if "/" not in text and "earer" not in text:
        return text
    text = _QUERY.sub(r"\1", text)
    text = _SECRET_SEGMENT.sub(rf"\1{REDACTED}", text)
    return _BEARER.sub(rf"\1{REDACTED}", text)


class Redaction(logging.Filter):
    """Replaces a record's message by its redacted text. On a logger it covers that logger's
    records whatever the handler; on a handler, every record it writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", False):
            return True
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            # uvicorn's (client, method, path, HTTP version, status): fields of their own in JSON.
            client, method, path, _, status = args
            for name, value in (("client", client), ("method", method), ("path", path), ("status", status)):
                setattr(record, name, redact(value) if isinstance(value, str) else value)
        try:
            # The whole text as formatted, whatever the arguments' types (an exception's
            # text may hold a URL too).
            record.msg, record.args = redact(record.getMessage()), None
        except (TypeError, ValueError):
            # A malformed call: logging reports it with the arguments, redact those at least.
            if isinstance(record.msg, str):
                record.msg = redact(record.msg)
            if isinstance(args, tuple):
                record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
            elif isinstance(args, Mapping):
                record.args = {k: redact(v) if isinstance(v, str) else v for k, v in args.items()}
        setattr(record, "_redacted", True)  # noqa: B010 (not an attribute LogRecord declares)
        return True


def install_redaction() -> None:
    """On the loggers that record URLs, whatever handlers an embedding application adds."""
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, Redaction) for f in logger.filters):
            logger.addFilter(Redaction())


# The attributes every LogRecord has; anything else on a record came as `extra`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "_redacted",
    # uvicorn's coloured copy of its message, for terminals.
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the record's
    extra fields, and the exception or stack as text if any."""

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        entry: dict[str, Any] = {
            "time": at.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry |= {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))


class ProcrecheHandler(logging.StreamHandler[TextIO]):
    """The handler `configure` installs (found again and replaced by a second call)."""


def handler(log_format: LogFormat, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing `log_format` to `stream` (stderr by default), redacting every record."""
    out = ProcrecheHandler(stream if stream is not None else sys.stderr)
    out.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    out.addFilter(Redaction())
    return out


def configure(log_format: LogFormat, stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """The process's logging: one handler on the root logger, which every logger (uvicorn's
    too, `gateway.cli.uvicorn_config` gives it no handlers of its own) propagates to."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, ProcrecheHandler)]:
        root.removeHandler(old)
    root.addHandler(handler(log_format, stream))
    root.setLevel(level)
    install_redaction()
    # Python's warnings too, so that stderr holds nothing but log lines in the JSON format.
    logging.captureWarnings(True)
