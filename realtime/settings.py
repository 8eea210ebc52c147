"""Settings read once from the environment, then passed explicitly (no module globals)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path


class SettingsError(ValueError):
    """An environment variable holds a value procreche cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything an operator can configure; see the table in README.md."""

    data_dir: Path = Path("var")
    database_url: str | None = None
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # Channels are spread over this many partitions; each owns one ingest stream and one
    # Redis Cluster hash slot. Changing it on a live deployment re-homes channels: don't.
    partitions: int = 8
    redis_prefix: str = "pc"
    history_maxlen: int = 1000
    resume_limit: int = 1000
    session_ttl_hours: int = 24 * 30
    login_max_attempts: int = 10
    login_window_seconds: int = 3600
    auth_timeout_seconds: float = 10.0
    worker_batch: int = 500
    reclaim_idle_ms: int = 30_000
    outbound_buffer_limit: int = 4 * 1024 * 1024
    demo_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            data_dir=Path(env.get("PROCRECHE_DATA") or "var"),
            database_url=env.get("DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            host=env.get("PROCRECHE_HOST") or "127.0.0.1",
            port=_int(env, "PROCRECHE_PORT", 8000),
            partitions=_int(env, "PROCRECHE_PARTITIONS", 8, minimum=1),
            redis_prefix=env.get("PROCRECHE_REDIS_PREFIX") or "pc",
            history_maxlen=_int(env, "PROCRECHE_HISTORY_MAXLEN", 1000, minimum=10),
            resume_limit=_int(env, "PROCRECHE_RESUME_LIMIT", 1000, minimum=1),
            session_ttl_hours=_int(env, "PROCRECHE_SESSION_TTL_HOURS", 24 * 30, minimum=1),
            login_max_attempts=_int(env, "PROCRECHE_LOGIN_MAX_ATTEMPTS", 10, minimum=1),
            login_window_seconds=_int(env, "PROCRECHE_LOGIN_WINDOW_SECONDS", 3600, minimum=1),
            worker_batch=_int(env, "PROCRECHE_WORKER_BATCH", 500, minimum=1),
            reclaim_idle_ms=_int(env, "PROCRECHE_RECLAIM_IDLE_MS", 30_000, minimum=100),
            outbound_buffer_limit=_int(env, "PROCRECHE_OUTBOUND_BUFFER", 4 * 1024 * 1024, minimum=65536),
            demo_password=env.get("PROCRECHE_DEMO_PASSWORD") or None,
        )

    def with_servers(self, database_url: str, redis_url: str) -> Settings:
        return replace(self, database_url=database_url, redis_url=redis_url)
