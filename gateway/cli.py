"""The `procreche` command: serve, worker, migrate, demo, drain, maintenance, backup, restore.

It lives in the gateway package because `serve` composes everything: embedded or
configured servers, the Starlette app under uvicorn, and the workers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Generator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from gateway.app import create_app
from gateway.metrics import configured_listener
from gateway.services import Services
from gateway.wsproto import FanoutWebSocketProtocol
from realtime import demo, logs, maintenance
from realtime.backup import backup, describe_backup, describe_restore, restore
from realtime.bus import Bus
from realtime.database import migrate, open_pool
from realtime.embedded import servers
from realtime.errors import ProcrecheError
from realtime.invalidation import announce
from realtime.keys import Keys
from realtime.media_store import open_media_store
from realtime.message_store import MessageStore
from realtime.metrics import Metrics
from realtime.passwords import Passwords
from realtime.protocol import MAX_FRAME
from realtime.redis_client import open_redis
from realtime.settings import Settings, SettingsError
from workers.exports import ExportWorker
from workers.media import MediaWorker
from workers.metrics import reported
from workers.persistence import PersistenceWorker
from workers.retention import RetentionJob

log = logging.getLogger("procreche")


class Server(uvicorn.Server):
    """uvicorn's server with our signal handling: SIGTERM must also stop the worker and
    the embedded servers cleanly, which uvicorn's own handlers (re-raising the signal
    after shutdown) would skip."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def uvicorn_config(app: ASGIApp, settings: Settings, port: int | None = None) -> uvicorn.Config:
    # A peer that answers no ping is closed once `idle_timeout` has passed without a sign of life.
    ping_timeout = max(1.0, settings.idle_timeout_seconds - settings.ping_interval_seconds)
    # uvicorn's loggers keep no handler of their own (log_config=None): they propagate to the
    # process's (realtime/logs.py), in its format, and the URLs they record are redacted.
    logs.install_redaction()
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port if port is None else port,
        ws=FanoutWebSocketProtocol,
        ws_max_size=MAX_FRAME,
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ping_interval_seconds,
        ws_ping_timeout=ping_timeout,
        lifespan="on",
        log_config=None,
        log_level="info",
        proxy_headers=True,
    )


def on_stop_signals(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)


async def run_worker(settings: Settings, stopping: asyncio.Event, metrics: Metrics | None = None) -> None:
    assert settings.database_url is not None
    assert settings.redis_url is not None
    async with (
        open_pool(settings.database_url, max_size=6 + settings.media_processes) as pool,
        open_redis(settings.redis_url) as redis,
        open_media_store(settings) as store,
    ):
        await migrate(pool)
        keys = Keys(settings.redis_prefix, settings.partitions)
        persistence = PersistenceWorker.configured(settings, redis, pool)
        bus = Bus(redis, keys, MessageStore(pool), history_maxlen=settings.history_maxlen)
        media = MediaWorker(pool, store, bus, settings)
        exports = ExportWorker(pool, store, bus, settings)
        retention = RetentionJob(pool, redis, keys, store)
        log.info(
            "persistence worker %s started; media worker: %d processes", persistence.name, settings.media_processes
        )
        async with reported(metrics, persistence, media), asyncio.TaskGroup() as tasks:
            tasks.create_task(persistence.run())
            tasks.create_task(media.run())
            tasks.create_task(exports.run())
            tasks.create_task(retention.run())
            await stopping.wait()
            persistence.close()
            media.close()
            exports.close()
            retention.close()


async def seed_demo(settings: Settings) -> None:
    assert settings.database_url is not None
    password, generated = demo.demo_password(settings.data_dir, settings.demo_password)
    async with open_pool(settings.database_url, max_size=2) as pool:
        await migrate(pool)
        await demo.seed(pool, Passwords(), password)
    source = (
        "generated now"
        if generated
        else ("PROCRECHE_DEMO_PASSWORD" if settings.demo_password else f"kept in {settings.data_dir / 'demo-password'}")
    )
    print(f"demo: '{demo.STRUCTURE}' ready; accounts {', '.join(u.email for u in demo.USERS)}")
    print(f"demo: password for every demo account: {password}  ({source})", flush=True)


async def serve(settings: Settings, *, with_demo: bool, with_worker: bool = True) -> None:
    async with servers(settings.data_dir, settings.database_url, settings.redis_url) as (db, rd):
        settings = settings.with_servers(db, rd)
        if with_demo:
            await seed_demo(settings)
        stopping = asyncio.Event()

        def exit_now() -> None:
            server.should_exit = True
            stopping.set()

        metrics = Metrics()  # one /metrics for the gateway and the workers of this process
        app = create_app(settings, on_drained=exit_now, process_metrics=metrics)
        server = Server(uvicorn_config(app, settings))
        drains: list[asyncio.Task[None]] = []

        def stop() -> None:
            # First SIGTERM: drain (clients move to other gateways, nothing lost), then exit.
            # A second one, or one before the app started: exit now.
            services: Services | None = getattr(app.state, "services", None)
            if services is None or drains:
                exit_now()
                return
            drains.append(asyncio.get_running_loop().create_task(services.drain()))

        on_stop_signals(stop)
        print(f"procreche: serving on http://{settings.host}:{settings.port}/", flush=True)
        async with configured_listener(metrics, settings), asyncio.TaskGroup() as tasks:
            if with_worker:
                tasks.create_task(run_worker(settings, stopping, metrics))
            try:
                await server.serve()
            finally:
                stopping.set()


async def worker(settings: Settings) -> None:
    async with servers(settings.data_dir, settings.database_url, settings.redis_url) as (db, rd):
        stopping = asyncio.Event()
        on_stop_signals(stopping.set)
        metrics = Metrics()
        async with configured_listener(metrics, settings):
            await run_worker(settings.with_servers(db, rd), stopping, metrics)


async def migrate_only(settings: Settings) -> None:
    async with (
        servers(settings.data_dir, settings.database_url, settings.redis_url) as (db, _),
        open_pool(db, max_size=1) as pool,
    ):
        await migrate(pool)
    print("procreche: schema up to date", flush=True)


async def drain_gateways(settings: Settings, names: Sequence[str]) -> None:
    async with (
        servers(settings.data_dir, settings.database_url, settings.redis_url) as (_, rd),
        open_redis(rd) as redis,
    ):
        await announce(redis, Keys(settings.redis_prefix, settings.partitions), drain=names or ["*"])
    print(f"procreche: drain asked of {', '.join(names) if names else 'every gateway'}", flush=True)


async def switch_maintenance(settings: Settings, action: str, message: str | None) -> None:
    async with (
        servers(settings.data_dir, settings.database_url, settings.redis_url) as (db, rd),
        open_pool(db, max_size=1) as pool,
        open_redis(rd) as redis,
    ):
        await migrate(pool)
        keys = Keys(settings.redis_prefix, settings.partitions)
        if action == "on":
            state = await maintenance.switch_on(pool, redis, keys, message)
            print(f"procreche: maintenance on since {state.since.isoformat()}: {state.message}", flush=True)
        elif action == "off":
            was_on = await maintenance.switch_off(pool, redis, keys)
            print(f"procreche: maintenance {'off' if was_on else 'was off already'}", flush=True)
        else:
            now = await maintenance.current(pool)
            shown = f"on since {now.since.isoformat()}: {now.message}" if now else "off"
            print(f"procreche: maintenance {shown}", flush=True)


async def demo_only(settings: Settings) -> None:
    async with servers(settings.data_dir, settings.database_url, settings.redis_url) as (db, rd):
        await seed_demo(settings.with_servers(db, rd))


async def backup_only(settings: Settings, directory: Path, pg_bin: Path | None) -> None:
    manifest = await backup(settings, directory, pg_bin=pg_bin)
    print(f"procreche: {describe_backup(directory, manifest)}", flush=True)


async def restore_only(settings: Settings, directory: Path, pg_bin: Path | None) -> None:
    restored = await restore(settings, directory, pg_bin=pg_bin)
    print(f"procreche: {describe_restore(directory, restored)}", flush=True)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="procreche", description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "run the gateway and the workers (persistence, media, exports)"),
        ("worker", "run the workers alone (persistence, media, exports)"),
        ("migrate", "apply schema.sql (idempotent)"),
        ("demo", "seed the demo structure (idempotent)"),
        ("drain", "drain gateways for maintenance: clients reconnect elsewhere, then the gateway exits"),
        ("maintenance", "maintenance mode: on MESSAGE (logins and connections refused with it), off, or status"),
        ("backup", "write the database and every media object into a new folder"),
        ("restore", "restore a backup folder into an empty deployment"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--data", type=Path, help="data folder for embedded servers (default ./var)")
        if name == "serve":
            sub.add_argument("--host")
            sub.add_argument("--port", type=int)
            sub.add_argument("--demo", action="store_true", help="seed the demo structure first")
            sub.add_argument(
                "--no-worker", action="store_true", help="the gateway alone: run `procreche worker` processes instead"
            )
        if name == "drain":
            sub.add_argument(
                "names", nargs="*", help="gateway names (PROCRECHE_GATEWAY_NAME, default host:port); none: all"
            )
        if name == "maintenance":
            sub.add_argument("action", nargs="?", choices=("on", "off", "status"), default="status")
            sub.add_argument("message", nargs="?", help="with on: what users are shown (1-500 characters)")
        if name in ("backup", "restore"):
            sub.add_argument("directory", type=Path, help="the backup folder (backup: absent or empty)")
            sub.add_argument("--pg-bin", type=Path, help="folder of pg_dump/pg_restore (default: found by version)")
    return parser.parse_args(argv)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop where it exists (not on Windows), asyncio's loop otherwise:
    uvloop's transports and callbacks are in C (docs/benchmarks.md, "Before and after")."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"procreche: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format)
    if args.data is not None:
        settings = replace(settings, data_dir=args.data)
    if args.command == "serve":
        settings = replace(
            settings,
            host=settings.host if args.host is None else args.host,
            port=settings.port if args.port is None else args.port,
        )
        if not settings.gateway_name:
            settings = replace(settings, gateway_name=f"{socket.gethostname()}:{settings.port}")
        runner = serve(settings, with_demo=args.demo, with_worker=not args.no_worker)
    elif args.command == "drain":
        runner = drain_gateways(settings, args.names)
    elif args.command == "maintenance":
        if (args.action == "on") != (args.message is not None):
            print("procreche: usage: procreche maintenance on MESSAGE | off | status", file=sys.stderr)
            return 2
        runner = switch_maintenance(settings, args.action, args.message)
    elif args.command in ("backup", "restore"):
        runner = (backup_only if args.command == "backup" else restore_only)(settings, args.directory, args.pg_bin)
    else:
        runner = {"worker": worker, "migrate": migrate_only, "demo": demo_only}[args.command](settings)
    try:
        run_loop(runner)
    except ProcrecheError as exc:
        print(f"procreche: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
