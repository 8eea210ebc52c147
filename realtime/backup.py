"""`procreche backup DIR` and `procreche restore DIR`: the database and every media object
it refers to, in one folder, and back into an empty deployment.

Backup. One REPEATABLE READ transaction exports its snapshot; pg_dump dumps that very
snapshot, and the media objects to copy are read from it too, so the dump and the copied
files describe the same instant, while the deployment keeps running. An object the
snapshot names may be gone by the time it is copied: if the live database no longer names
it either, the database changed meanwhile (an upload processed, an export expired) and the
key is listed as `vanished`; if it still does, the object was lost before the backup: the
backup is written, listed as `missing`, and the command fails so that monitoring sees it.

Restore. Everything is checked before anything is written: the manifest, every file's
size and SHA-256, the server's version, that the database holds no structure and no user,
and that this pg_restore reads the archive. Then the media objects are put back, then the
database is restored in one transaction: a restore that fails leaves the database empty,
so it can simply be run again. An upload still waiting for processing whose file the
backup lacks (vanished or missing) is restored rejected, so that no worker waits for it.
Redis is not in a backup (it holds live state only): the
restored channels' sequence keys are deleted, so each channel's next publish re-seeds its
sequence from the restored messages under a new epoch (realtime/bus.py, `_seed_sequence`),
even when the Redis in front of the restored database is an older one.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from redis.asyncio import Redis
from redis.exceptions import RedisError

from realtime import pg_tools
from realtime.backup_manifest import (
    DUMP_FILE,
    MANIFEST_FILE,
    MEDIA_DIR,
    FileSum,
    Manifest,
    ManifestError,
    MediaFile,
    file_sum,
    read_manifest,
)
from realtime.channels import Channel
from realtime.database import Pool, migrate, open_pool, schema_path
from realtime.embedded import embedded_postgres, servers
from realtime.errors import BadRequest, ProcrecheError
from realtime.keys import Keys
from realtime.media import MediaLibrary
from realtime.media_store import MediaStore, MissingObject, open_media_store
from realtime.redis_client import open_redis
from realtime.settings import Settings

log = logging.getLogger("procreche.backup")

# pg_dump and pg_restore are stopped past this; beyond it, use the WAL-based recipe of
# docs/operations.md.
DUMP_TIMEOUT = 6 * 3600.0
# pg_restore --list reads the archive's table of contents only.
LIST_TIMEOUT = 300.0
# Counting rows and listing keys scan whole tables: more than the pool's command timeout.
QUERY_TIMEOUT = 600.0
# One object copied or put back: a 300 MiB video over a slow link, with room to spare.
OBJECT_TIMEOUT = 900.0
TRANSFERS = 8
VERIFIERS = 4
REDIS_BATCH = 500
DIR_MODE = 0o700
FILE_MODE = 0o600
OCTET_STREAM = "application/octet-stream"
# Every object the media table names, with the type to put it back with.
MEDIA_OBJECTS = """
SELECT r.value->>'key' AS key, coalesce(r.value->>'type', $1) AS type
  FROM media CROSS JOIN LATERAL jsonb_each(media.renditions) AS r
 WHERE jsonb_typeof(r.value) = 'object' AND r.value->>'key' IS NOT NULL
UNION
SELECT incoming_key, coalesce(content_type, $1) FROM media WHERE incoming_key IS NOT NULL
"""
# Only a ready export has a file (a queued or running one is rebuilt by the export worker),
# and not once it has lapsed: the expiry sweep deletes the file before it marks the row.
EXPORT_OBJECTS = (
    "SELECT object_key, $1 FROM exports WHERE state = 'ready' AND object_key IS NOT NULL AND expires_at > now()"
)
EXPORT_COLUMNS = frozenset({"object_key", "state", "expires_at"})

T = TypeVar("T")
Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"


class BackupError(ProcrecheError):
    """A backup or a restore that cannot be done, or did not complete; the message says why."""

    code = "backup_failed"


@dataclass(frozen=True)
class Restored:
    manifest: Manifest
    channels: int
    uploads_rejected: int


async def backup(settings: Settings, directory: Path, *, pg_bin: Path | None = None) -> Manifest:
    """Write a backup of the deployment into `directory` (created; absent or empty)."""
    try:
        created = await asyncio.to_thread(_claim_directory, directory)
    except OSError as exc:
        raise BackupError(f"{directory} cannot be made: {exc}") from exc
    try:
        try:
            manifest = await _backup(settings, directory, pg_bin)
        except (OSError, asyncpg.PostgresError) as exc:
            raise BackupError(f"backup failed: {exc}") from exc
    except BaseException:
        # Children's photos are not left lying about in a folder that is no backup.
        await asyncio.shield(asyncio.to_thread(_clear_directory, directory, created))
        raise
    if manifest.missing:
        raise BackupError(
            f"backup written to {directory}, but {len(manifest.missing)} media object(s) that the database "
            f'refers to are missing from the media store (listed in {MANIFEST_FILE} under "missing"): '
            + ", ".join(manifest.missing[:5])
        )
    return manifest


async def restore(settings: Settings, directory: Path, *, pg_bin: Path | None = None) -> Restored:
    """Restore the backup in `directory` into this deployment, which must be empty."""
    try:
        return await _restore(settings, directory, pg_bin)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BackupError(f"restore failed: {exc}") from exc


async def _restore(settings: Settings, directory: Path, pg_bin: Path | None) -> Restored:
    try:
        manifest = await asyncio.to_thread(read_manifest, directory)
    except ManifestError as exc:
        raise BackupError(f"{exc}; nothing was restored") from None
    await _verify_files(directory, manifest)
    async with (
        servers(settings.data_dir, settings.database_url, settings.redis_url) as (database_url, redis_url),
        open_pool(database_url, max_size=2) as pool,
        open_redis(redis_url) as redis,
    ):
        version, major = await _server_version(pool)
        if major < manifest.server_major:
            raise BackupError(
                f"the backup comes from PostgreSQL {manifest.server_version} and this server is {version}: "
                f"restore it into PostgreSQL {manifest.server_major} or later; nothing was restored"
            )
        await _refuse_unless_empty(pool)
        pg_restore = await pg_tools.find("pg_restore", major, at_least=manifest.pg_dump_major, explicit_dir=pg_bin)
        dump = directory / DUMP_FILE
        # Proves that this pg_restore reads the archive, before anything is written.
        await pg_tools.run_checked(pg_restore, ["--list", str(dump)], db=None, timeout=LIST_TIMEOUT)
        log.info("restore: verified %s; putting back %d media objects", directory, len(manifest.media))
        # Media first: until the database is restored the deployment is still empty, so a
        # restore that fails half-way can be run again.
        async with open_media_store(settings) as store:
            await _for_each(manifest.media, lambda m: _put(store, directory, m), TRANSFERS)
        await _refuse_unless_empty(pool)  # again: putting the media back took a while
        await pg_tools.run_checked(
            pg_restore,
            ["--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction", str(dump)],
            db=pg_tools.target(database_url),
            timeout=DUMP_TIMEOUT,
        )
        await _check_counts(pool, manifest.tables)
        await migrate(pool)
        rejected = await _reject_uploads_without_file(pool, manifest.vanished + manifest.missing)
        channels = await _restart_sequences(pool, redis, Keys(settings.redis_prefix, settings.partitions))
    return Restored(manifest, channels, rejected)


async def _backup(settings: Settings, directory: Path, pg_bin: Path | None) -> Manifest:
    dump = directory / DUMP_FILE
    async with _database(settings) as url, open_pool(url, max_size=2) as pool:
        version, major = await _server_version(pool)
        if not await pool.fetchval("SELECT to_regclass('media') IS NOT NULL"):
            raise BackupError("this database holds no procreche schema (no media table): is DATABASE_URL right?")
        pg_dump = await pg_tools.find("pg_dump", major, explicit_dir=pg_bin)
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            # pg_dump imports the snapshot, which lives only as long as this transaction.
            await conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            tables = await _row_counts(conn)
            objects = await _referenced_objects(conn)
            await pg_tools.run_checked(
                pg_dump,
                ["--format=custom", f"--snapshot={snapshot}", f"--file={dump}"],
                db=pg_tools.target(url),
                timeout=DUMP_TIMEOUT,
            )
        log.info("backup: database dumped; copying %d media objects", len(objects))
        async with open_media_store(settings) as store:
            copied, absent = await _fetch_all(store, objects, directory / MEDIA_DIR)
        missing: set[str] = set()
        if absent:
            async with pool.acquire() as conn:
                missing = set(await _referenced_objects(conn)) & set(absent)
    database = await asyncio.to_thread(_seal_dump, dump)
    manifest = Manifest(
        created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        procreche_version=importlib.metadata.version("procreche"),
        schema_sha256=(await asyncio.to_thread(lambda: file_sum(schema_path()))).sha256,
        tables=tables,
        server_version=version,
        server_major=major,
        pg_dump_version=pg_dump.version,
        pg_dump_major=pg_dump.major,
        database=database,
        media=tuple(copied),
        vanished=tuple(sorted(set(absent) - missing)),
        missing=tuple(sorted(missing)),
    )
    await asyncio.to_thread(_write_manifest, directory, manifest)
    return manifest


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[str]:
    """The configured database, or the embedded one; a backup needs no Redis."""
    if settings.database_url is not None:
        yield settings.database_url
    else:
        async with embedded_postgres(settings.data_dir) as url:
            yield url


async def _server_version(pool: Pool) -> tuple[str, int]:
    row = await pool.fetchrow(
        "SELECT current_setting('server_version') AS version, current_setting('server_version_num')::int AS num"
    )
    assert row is not None
    # "15.20 (Debian 15.20-0+deb12u1)": the number is what matters.
    return str(row["version"]).split()[0], int(row["num"]) // 10000


async def _row_counts(conn: Connection) -> dict[str, int]:
    names = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"
    )
    return {
        r[0]: int(await conn.fetchval(f"SELECT count(*) FROM {_quote(r[0])}", timeout=QUERY_TIMEOUT)) for r in names
    }


async def _referenced_objects(conn: Connection) -> dict[str, str]:
    """Every object key the database names, with its content type."""
    rows = list(await conn.fetch(MEDIA_OBJECTS, OCTET_STREAM, timeout=QUERY_TIMEOUT))
    export_columns = {
        r[0]
        for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = 'exports'"
        )
    }
    if export_columns >= EXPORT_COLUMNS:
        rows += await conn.fetch(EXPORT_OBJECTS, OCTET_STREAM, timeout=QUERY_TIMEOUT)
    elif export_columns:
        log.warning("backup: the exports table lacks one of %s: its files are not copied", sorted(EXPORT_COLUMNS))
    return {r[0]: r[1] for r in rows}


async def _fetch_all(store: MediaStore, objects: dict[str, str], media_dir: Path) -> tuple[list[MediaFile], list[str]]:
    """Copy the objects under `media_dir`: what was copied, and the keys the store did not hold."""
    copied: list[MediaFile] = []
    absent: list[str] = []

    async def fetch(item: tuple[str, str]) -> None:
        key, content_type = item
        destination = media_dir / key
        await asyncio.to_thread(destination.parent.mkdir, mode=DIR_MODE, parents=True, exist_ok=True)
        try:
            async with _object_deadline(key):
                await store.fetch(key, destination)
        except MissingObject:
            absent.append(key)
            return
        copied.append(MediaFile(key, content_type, await asyncio.to_thread(file_sum, destination)))

    await _for_each(sorted(objects.items()), fetch, TRANSFERS)
    return sorted(copied, key=lambda m: m.key), sorted(absent)


async def _verify_files(directory: Path, manifest: Manifest) -> None:
    checks = [(DUMP_FILE, manifest.database)] + [(f"{MEDIA_DIR}/{m.key}", m.sum) for m in manifest.media]

    async def verify(check: tuple[str, FileSum]) -> None:
        name, expected = check
        try:
            actual = await asyncio.to_thread(file_sum, directory / name)
        except OSError as exc:
            raise BackupError(f"{name} cannot be read ({exc}); nothing was restored") from None
        if actual != expected:
            raise BackupError(
                f"{name} does not match the manifest ({actual.bytes} bytes, SHA-256 {actual.sha256[:12]}…; "
                f"expected {expected.bytes} bytes, {expected.sha256[:12]}…): the backup is damaged or was "
                "altered; nothing was restored"
            )

    await _for_each(checks, verify, VERIFIERS)


async def _refuse_unless_empty(pool: Pool) -> None:
    for table in ("structures", "users"):
        exists = await pool.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
        if exists and await pool.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
            raise BackupError(
                f"the database already holds {table}: a backup is restored into an empty deployment only "
                "(a new database); nothing was restored"
            )


async def _put(store: MediaStore, directory: Path, media: MediaFile) -> None:
    async with _object_deadline(media.key):
        await store.put(media.key, directory / MEDIA_DIR / media.key, media.content_type)


async def _check_counts(pool: Pool, tables: dict[str, int]) -> None:
    """The restored tables hold as many rows as the dumped ones did."""
    for table, expected in tables.items():
        actual = await pool.fetchval(f"SELECT count(*) FROM {_quote(table)}", timeout=QUERY_TIMEOUT)
        if actual != expected:
            raise BackupError(f"after pg_restore, table {table} holds {actual} rows; the backup had {expected}")


async def _reject_uploads_without_file(pool: Pool, absent: tuple[str, ...]) -> int:
    """Uploads the dump has waiting for processing whose file the backup does not hold:
    processed while the backup ran (the renditions replaced the upload before it was
    copied), or lost before. They are rejected, as a file the worker cannot read would be,
    rather than left for a worker to look for in vain."""
    if not absent:
        return 0
    ids = await pool.fetch(
        "SELECT id::text FROM media WHERE state = 'processing' AND incoming_key = ANY($1::text[])", list(absent)
    )
    library = MediaLibrary(pool)
    rejected = 0
    for row in ids:
        rejected += await library.reject(row[0], "media_unreadable")
    return rejected


async def _restart_sequences(pool: Pool, redis: Redis, keys: Keys) -> int:
    names = [r[0] for r in await pool.fetch("SELECT DISTINCT channel FROM messages", timeout=QUERY_TIMEOUT)]
    channels = []
    for name in names:
        try:
            channels.append(Channel.parse(name))
        except BadRequest:
            log.warning("restore: messages of %r, which is not a channel name, are left as they are", name)
    try:
        for start in range(0, len(channels), REDIS_BATCH):
            # Not a transaction: each DEL touches one channel's keys, i.e. one hash slot.
            async with redis.pipeline(transaction=False) as pipe:
                for channel in channels[start : start + REDIS_BATCH]:
                    ck = keys.channel(channel)
                    pipe.delete(ck.seq, ck.epoch)
                await pipe.execute()
    except RedisError as exc:
        raise BackupError(
            f"the database is restored, but Redis could not be told ({exc}): delete the keys "
            f"'{keys.prefix}:{{*}}:seq:*' and '{keys.prefix}:{{*}}:epoch:*' before starting procreche"
        ) from exc
    return len(channels)


async def _for_each(items: Iterable[T], action: Callable[[T], Awaitable[None]], lanes: int) -> None:
    """`action` on every item, `lanes` at a time. The first failure cancels the rest and
    is raised as itself (not as an ExceptionGroup), so that callers and the CLI see it."""
    pending = iter(items)

    async def lane() -> None:
        for item in pending:
            await action(item)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(lanes):
                group.create_task(lane())
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None


@contextlib.asynccontextmanager
async def _object_deadline(key: str) -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(OBJECT_TIMEOUT):
            yield
    except TimeoutError:
        raise BackupError(f"media object {key} took more than {OBJECT_TIMEOUT:.0f} s to transfer") from None


def _claim_directory(directory: Path) -> bool:
    """Make `directory` ours: True if created, False if it was there and empty."""
    try:
        directory.mkdir(mode=DIR_MODE, parents=True)
        return True
    except FileExistsError:
        if not directory.is_dir():
            raise BackupError(f"{directory} exists and is not a folder") from None
        if any(directory.iterdir()):
            raise BackupError(f"{directory} is not empty: a backup is written into a new or empty folder") from None
        return False


def _clear_directory(directory: Path, created: bool) -> None:
    if created:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _seal_dump(dump: Path) -> FileSum:
    dump.chmod(FILE_MODE)
    return file_sum(dump)


def _write_manifest(directory: Path, manifest: Manifest) -> None:
    temp = directory / f".{MANIFEST_FILE}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(manifest.to_json(), out, indent=1, ensure_ascii=False)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    # Last, and whole: a folder with a manifest is a complete backup.
    os.replace(temp, directory / MANIFEST_FILE)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def describe_backup(directory: Path, manifest: Manifest) -> str:
    stored = sum(m.sum.bytes for m in manifest.media)
    text = (
        f"backup written to {directory}: database {_size(manifest.database.bytes)} "
        f"({len(manifest.tables)} tables, {manifest.tables.get('messages', 0)} messages), "
        f"{len(manifest.media)} media objects ({_size(stored)})"
    )
    if manifest.vanished:
        text += f'; {len(manifest.vanished)} object(s) changed while it ran (listed as "vanished")'
    return text


def describe_restore(directory: Path, restored: Restored) -> str:
    m = restored.manifest
    text = (
        f"restored {directory} (backup of {m.created_at}): {len(m.tables)} tables, "
        f"{len(m.media)} media objects; {restored.channels} channel(s) continue after their restored messages "
        "under a new epoch"
    )
    if restored.uploads_rejected:
        text += f"; {restored.uploads_rejected} upload(s) whose file the backup lacks were rejected"
    if m.missing:
        text += f"; {len(m.missing)} object(s) were already missing when the backup was taken"
    return text


def _size(n: int) -> str:
    value, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
