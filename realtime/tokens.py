"""Bearer secrets (session tokens, invitation links): only their SHA-256 is stored, so a
copy of the database opens no session."""

from __future__ import annotations

import hashlib


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
