"""Which browser pages may open a WebSocket: the check against cross-site WebSocket
hijacking. Pure."""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit


def origin_allowed(origin: str | None, host: str | None, allowed: Collection[str]) -> bool:
    """A missing Origin is a non-browser client (browsers always send it); "null" (sandboxed
    frames, file pages) is refused; otherwise the origin must be the gateway's own (same
    host and port as the request's Host) or listed exactly in `allowed` ("*": any)."""
    if origin is None:
        return True
    if "*" in allowed:
        return True
    if origin in allowed:
        return True
    if origin == "null" or host is None:
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        return False
    return parts.netloc.lower() == host.lower()
