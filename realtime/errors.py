"""Every error a client can see, with its stable code, and the WebSocket close codes.

The tree:

    ProcrecheError                 code, message, http_status, retry
    ├── BadRequest                 the request itself is wrong: fix it, don't retry as is
    ├── Unauthenticated            no valid session: log in again
    ├── Forbidden                  denied by policy (also terms_not_accepted)
    ├── NotFound
    ├── Conflict                   valid, but clashes with the current state
    ├── Gone                       existed, and was withdrawn
    ├── TooLarge                   over a size cap or a quota
    ├── UnsupportedType            content of a type procreche does not take
    ├── Throttled                  too many attempts: retry later
    └── Unavailable                a backing server is down: retry with backoff

Codes are part of the external contract (docs/protocol.md): never rename one.
"""

from __future__ import annotations

import enum

import asyncpg
import redis.exceptions


class ProcrecheError(Exception):
    code = "internal"
    http_status = 500
    retry = False

    def __init__(self, message: str, *, code: str | None = None, details: tuple[dict[str, object], ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        # Machine-readable specifics, e.g. whose consent is missing for which child.
        self.details = details
        if code is not None:
            self.code = code

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = list(self.details)
        return body


class BadRequest(ProcrecheError):
    code = "bad_request"
    http_status = 400


class Unauthenticated(ProcrecheError):
    code = "unauthenticated"
    http_status = 401


class Forbidden(ProcrecheError):
    code = "forbidden"
    http_status = 403


class NotFound(ProcrecheError):
    code = "not_found"
    http_status = 404


class Conflict(ProcrecheError):
    """Valid, but clashes with the current state (a name taken, the last admin)."""

    code = "conflict"
    http_status = 409


class Gone(ProcrecheError):
    code = "gone"
    http_status = 410


class TooLarge(ProcrecheError):
    code = "too_large"
    http_status = 413


class UnsupportedType(ProcrecheError):
    code = "media_type_unsupported"
    http_status = 415


class Throttled(ProcrecheError):
    code = "too_many_attempts"
    http_status = 429
    retry = True


class Unavailable(ProcrecheError):
    code = "unavailable"
    http_status = 503
    retry = True


# A backing server is down or slow: the client should retry, and hears `unavailable`.
TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def client_error(exc: BaseException) -> ProcrecheError:
    """What a client is told of an exception: its own error, `unavailable`, or `internal`."""
    if isinstance(exc, ProcrecheError):
        return exc
    if isinstance(exc, TRANSIENT):
        return Unavailable("a backing service is unavailable; retry shortly")
    return ProcrecheError("internal error; retry later")


def terms_not_accepted() -> Forbidden:
    return Forbidden("the current terms of use must be accepted first", code="terms_not_accepted")


class CloseCode(enum.IntEnum):
    """WebSocket close codes the gateway sends (1009, 1011 and 1012 through uvicorn).
    4000–4099: resume at once; 4400–4499: don't reconnect without doing something first
    (log in, accept the terms)."""

    MESSAGE_TOO_BIG = 1009
    INTERNAL = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    LIVE_PATH_LOST = 4000
    SLOW_CONSUMER = 4001
    RATE_LIMITED = 4029
    AUTH_TIMEOUT = 4401
    AUTH_FAILED = 4403
    TERMS_NOT_ACCEPTED = 4406
