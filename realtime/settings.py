"""Settings read once from the environment, then passed explicitly (no module globals)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from realtime.logs import FORMATS, LogFormat


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


def _port(env: Mapping[str, str], name: str) -> int | None:
    if not env.get(name):
        return None
    port = _int(env, name, 0)
    if port > 65535:
        raise SettingsError(f"{name} must be a TCP port (0-65535), got {port}")
    return port


def _log_format(raw: str) -> LogFormat:
    for known in FORMATS:
        if raw.strip().lower() == known:
            return known
    raise SettingsError(f"PROCRECHE_LOG_FORMAT must be one of {', '.join(FORMATS)}, got {raw!r}")


def parse_partitions(raw: str, partitions: int, name: str = "PROCRECHE_WORKER_PARTITIONS") -> frozenset[int] | None:
    """Parse a set of partitions like "0-3,6" (ranges inclusive); empty means all (None)."""
    if not raw.strip():
        return None
    chosen: set[int] = set()
    for part in raw.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise SettingsError(f'{name} must list partitions and ranges like "0-3,6", got {raw!r}') from None
        if low < 0 or high < low:
            raise SettingsError(f"{name}: {part.strip()!r} is not a range of partitions (low-high, low ≤ high)")
        if high >= partitions:
            raise SettingsError(
                f"{name} names partition {high}, but there are only {partitions} (0-{partitions - 1}, "
                "PROCRECHE_PARTITIONS)"
            )
        chosen.update(range(low, high + 1))
    return frozenset(chosen)


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
    # The partitions whose ingest streams this process's worker consumes; None: all of them.
    worker_partitions: frozenset[int] | None = None
    outbound_buffer_limit: int = 4 * 1024 * 1024
    # Origins allowed to open /ws (the web app's own origin is always allowed); "*" allows any.
    allowed_origins: frozenset[str] = frozenset()
    # Requests a connection may send: `rate_burst` at once, refilled at `rate_per_second`.
    rate_per_second: float = 50.0
    rate_burst: int = 200
    ping_interval_seconds: float = 20.0
    # A connection that sends nothing (not even a pong) for this long is closed.
    idle_timeout_seconds: float = 60.0
    # On drain: how long clients get to reconnect elsewhere before they are closed.
    drain_grace_seconds: float = 10.0
    # This gateway's name for `procreche drain NAME` (default: host:port).
    gateway_name: str = ""
    demo_password: str | None = field(default=None, repr=False)
    # Media files: on disk under `media_dir` (default <data>/media), or in the S3 bucket
    # `s3_bucket` when one is set. Objects are never public either way.
    media_dir: Path | None = None
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    # Where clients reach the bucket, when not at s3_endpoint_url (MinIO behind the
    # reverse proxy): links are signed for that host.
    s3_public_url: str | None = None
    s3_region: str = "us-east-1"
    # Unset: boto's usual chain (AWS_ACCESS_KEY_ID..., instance profile).
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = field(default=None, repr=False)
    # Caps on what one upload may be, and on what a structure may store in all.
    media_max_bytes: int = 300 * 1024 * 1024
    media_max_pixels: int = 80_000_000
    media_max_seconds: int = 300
    media_quota_bytes: int = 20 * 1024**3
    # Media processed at once by one worker, each in a process of its own.
    media_processes: int = 2
    # Days a ready data export stays downloadable before the worker deletes it.
    export_days: int = 7
    # Logs as lines for humans ("text") or one JSON object per line ("json", realtime/logs.py).
    log_format: LogFormat = "text"
    # A listener serving only /metrics, for `procreche worker` (which has no HTTP otherwise)
    # and optionally `serve`; None: none. Loopback by default: /metrics has no authentication.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    @property
    def media_root(self) -> Path:
        return self.media_dir if self.media_dir is not None else self.data_dir / "media"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        partitions = _int(env, "PROCRECHE_PARTITIONS", 8, minimum=1)
        return cls(
            data_dir=Path(env.get("PROCRECHE_DATA") or "var"),
            database_url=env.get("DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            host=env.get("PROCRECHE_HOST") or "127.0.0.1",
            port=_int(env, "PROCRECHE_PORT", 8000),
            partitions=partitions,
            redis_prefix=env.get("PROCRECHE_REDIS_PREFIX") or "pc",
            history_maxlen=_int(env, "PROCRECHE_HISTORY_MAXLEN", 1000, minimum=10),
            resume_limit=_int(env, "PROCRECHE_RESUME_LIMIT", 1000, minimum=1),
            session_ttl_hours=_int(env, "PROCRECHE_SESSION_TTL_HOURS", 24 * 30, minimum=1),
            login_max_attempts=_int(env, "PROCRECHE_LOGIN_MAX_ATTEMPTS", 10, minimum=1),
            login_window_seconds=_int(env, "PROCRECHE_LOGIN_WINDOW_SECONDS", 3600, minimum=1),
            worker_batch=_int(env, "PROCRECHE_WORKER_BATCH", 500, minimum=1),
            reclaim_idle_ms=_int(env, "PROCRECHE_RECLAIM_IDLE_MS", 30_000, minimum=100),
            worker_partitions=parse_partitions(env.get("PROCRECHE_WORKER_PARTITIONS", ""), partitions),
            outbound_buffer_limit=_int(env, "PROCRECHE_OUTBOUND_BUFFER", 4 * 1024 * 1024, minimum=65536),
            allowed_origins=frozenset(
                o.strip() for o in env.get("PROCRECHE_ALLOWED_ORIGINS", "").split(",") if o.strip()
            ),
            rate_per_second=_int(env, "PROCRECHE_RATE_PER_SECOND", 50, minimum=1),
            rate_burst=_int(env, "PROCRECHE_RATE_BURST", 200, minimum=1),
            ping_interval_seconds=_int(env, "PROCRECHE_PING_INTERVAL", 20, minimum=1),
            idle_timeout_seconds=_int(env, "PROCRECHE_IDLE_TIMEOUT", 60, minimum=5),
            drain_grace_seconds=_int(env, "PROCRECHE_DRAIN_GRACE", 10, minimum=0),
            gateway_name=env.get("PROCRECHE_GATEWAY_NAME") or "",
            demo_password=env.get("PROCRECHE_DEMO_PASSWORD") or None,
            media_dir=Path(env["PROCRECHE_MEDIA_DIR"]) if env.get("PROCRECHE_MEDIA_DIR") else None,
            s3_bucket=env.get("S3_BUCKET") or None,
            s3_endpoint_url=env.get("S3_ENDPOINT_URL") or None,
            s3_public_url=env.get("S3_PUBLIC_URL") or None,
            s3_region=env.get("S3_REGION") or "us-east-1",
            s3_access_key_id=env.get("S3_ACCESS_KEY_ID") or None,
            s3_secret_access_key=env.get("S3_SECRET_ACCESS_KEY") or None,
            media_max_bytes=_int(env, "PROCRECHE_MEDIA_MAX_BYTES", 300 * 1024 * 1024, minimum=1024),
            media_max_pixels=_int(env, "PROCRECHE_MEDIA_MAX_PIXELS", 80_000_000, minimum=10_000),
            media_max_seconds=_int(env, "PROCRECHE_MEDIA_MAX_SECONDS", 300, minimum=1),
            media_quota_bytes=_int(env, "PROCRECHE_MEDIA_QUOTA_BYTES", 20 * 1024**3, minimum=0),
            media_processes=_int(env, "PROCRECHE_MEDIA_PROCESSES", 2, minimum=1),
            export_days=_int(env, "PROCRECHE_EXPORT_DAYS", 7, minimum=1),
            log_format=_log_format(env.get("PROCRECHE_LOG_FORMAT") or "text"),
            metrics_port=_port(env, "PROCRECHE_METRICS_PORT"),
            metrics_host=env.get("PROCRECHE_METRICS_HOST") or "127.0.0.1",
        )

    def with_servers(self, database_url: str, redis_url: str) -> Settings:
        return replace(self, database_url=database_url, redis_url=redis_url)
