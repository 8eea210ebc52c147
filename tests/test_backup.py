"""Backups are restored in tests (terms of use, data security): a deployment with messages,
consents and photos is backed up, restored into a new database and a new media store, and
found intact there; restore refuses what it must refuse, before writing anything."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from realtime.backup import BackupError, backup, restore
from realtime.backup_manifest import DUMP_FILE, MANIFEST_FILE, MEDIA_DIR, Manifest, read_manifest
from realtime.channels import Channel
from realtime.client import Client
from realtime.database import migrate, open_pool
from realtime.keys import Keys
from realtime.settings import Settings
from tests.conftest import (
    Gateway,
    bearer,
    drop_keys,
    execute_once,
    media_worker,
    persistence_worker,
    running_gateway,
    wait_for,
)
from tests.conftest import with_database as database_named
from tests.media_samples import jpeg_with_metadata
from tests.processes import procreche_env, run_cli
from tests.test_media_api import fetch, ids, media_body, ready_photo, upload

pytestmark = pytest.mark.usefixtures("demo_families")

PASSWORD = "never-in-a-log-7f3a"


@contextlib.asynccontextmanager
async def new_deployment(settings: Settings, tmp_path: Path) -> AsyncIterator[Settings]:
    """An empty deployment beside the test's: a database of its own (dropped at the end),
    an empty media folder, and a Redis key prefix nothing has used."""
    assert settings.database_url is not None
    assert settings.redis_url is not None
    name = f"procreche_restore_{secrets.token_hex(4)}"
    await execute_once(settings.database_url, f'CREATE DATABASE "{name}"')
    prefix = f"r{secrets.token_hex(4)}"
    try:
        yield replace(
            settings,
            database_url=database_named(settings.database_url, name),
            data_dir=tmp_path / name,
            media_dir=tmp_path / name / "media",
            redis_prefix=prefix,
        )
    finally:
        await execute_once(settings.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await drop_keys(settings.redis_url, prefix)


async def table_rows(database_url: str, tables: list[str]) -> dict[str, list[str]]:
    """Every row of every table, as JSON text, in a stable order."""
    conn = await asyncpg.connect(database_url)
    try:
        return {
            t: [r[0] for r in await conn.fetch(f'SELECT to_jsonb(t)::text FROM "{t}" t ORDER BY 1')] for t in tables
        }
    finally:
        await conn.close()


def stored_objects(root: Path) -> dict[str, str]:
    """The media store's objects under a folder: key → SHA-256 (names with a dot are the store's own)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


async def public_tables(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))
    finally:
        await conn.close()


async def persisted(pool: asyncpg.Pool, count: int) -> None:
    await wait_for(lambda: _has_messages(pool, count))


async def _has_messages(pool: asyncpg.Pool, count: int) -> bool:
    return int(await pool.fetchval("SELECT count(*) FROM messages")) >= count


def with_password(url: str, password: str) -> str:
    scheme, _, rest = url.partition("://")
    userinfo, _, hosts = rest.partition("@")
    return f"{scheme}://{userinfo.split(':')[0]}:{password}@{hosts}"


async def test_a_restored_backup_holds_every_message_consent_and_media(
    gateway: Gateway,
    settings: Settings,
    redis: Redis,
    pool: asyncpg.Pool,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    known = await ids(gateway)
    family = f"family:{known['Famille Martin']}"
    staff = await gateway.login("staff@demo.test")
    martin = await gateway.login("martin@demo.test")
    father = await gateway.login("dupont.pere@demo.test")
    signed = await gateway.http.post(
        f"/api/children/{known['Hugo']}/consent", json={"declare": True}, headers=bearer(father)
    )
    assert signed.status_code == 201, signed.text
    async with persistence_worker(settings, redis, pool), media_worker(gateway):
        photo = await ready_photo(gateway, staff, tmp_path)
        async with Client.connect(gateway.ws, staff) as s, Client.connect(gateway.ws, martin) as m:
            await s.publish(family, "Léa a bien dormi.")
            await m.publish(family, "Merci !")
            await s.request(
                "publish", channel=family, msg_id="photo-lea-1", body=media_body(photo), children=[known["Léa"]]
            )
            await s.publish(f"child:{known['Léa']}", "Premiers pas aujourd'hui")
        await persisted(pool, 4)
    # An upload no worker has processed yet: its file is the `incoming` object.
    waiting = await upload(gateway, staff, jpeg_with_metadata(tmp_path / "waiting.jpg").read_bytes())
    assert waiting.status_code == 202, waiting.text

    folder = tmp_path / "backup"
    assert settings.database_url is not None
    with caplog.at_level(logging.DEBUG):
        manifest = await backup(replace(settings, database_url=with_password(settings.database_url, PASSWORD)), folder)
    assert PASSWORD not in caplog.text
    assert (manifest.tables["messages"], manifest.tables["consents"], manifest.tables["media"]) == (
        4,
        await pool.fetchval("SELECT count(*) FROM consents"),
        2,
    )
    assert len(manifest.media) == 4  # three renditions and one upload
    assert (manifest.missing, manifest.vanished) == ((), ())
    assert Manifest.from_json(json.loads((folder / MANIFEST_FILE).read_text())) == manifest

    async with new_deployment(settings, tmp_path) as target:
        restored = await restore(target, folder)
        assert restored.channels == 2
        assert target.database_url is not None
        tables = sorted(manifest.tables)
        before, after = await table_rows(settings.database_url, tables), await table_rows(target.database_url, tables)
        for table in ("messages", "consents", "media"):
            assert after[table], table
        assert after == before
        assert stored_objects(target.media_root) == stored_objects(settings.media_root)

        async with running_gateway(target) as again:
            martin_again = await again.login("martin@demo.test", accept_terms=False)
            served = await fetch(again, martin_again, photo, "screen")
            assert served.status_code == 200, served.text
            screen = await pool.fetchval(
                "SELECT renditions->'screen'->>'key' FROM media WHERE id = $1", uuid.UUID(photo)
            )
            assert served.content == (settings.media_root / screen).read_bytes()
            # Redis is empty for the restored deployment: the channel continues after its
            # restored messages, and a subscriber reads them all.
            async with Client.connect(again.ws, await again.login("staff@demo.test", accept_terms=False)) as s:
                ack = await s.publish(family, "Après la restauration")
                assert ack["seq"] == 4
                async with Client.connect(again.ws, martin_again) as m:
                    await m.subscribe(family, since=0)
                    history = await m.pushes_until(4)
            assert [h["seq"] for h in history] == [1, 2, 3, 4]
            assert [h["body"].get("text") for h in history] == [
                "Léa a bien dormi.",
                "Merci !",
                None,
                "Après la restauration",
            ]


async def test_a_restored_channel_continues_after_its_messages_whatever_redis_holds(
    gateway: Gateway, settings: Settings, redis: Redis, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    known = await ids(gateway)
    family, child = f"family:{known['Famille Martin']}", f"child:{known['Léa']}"
    async with (
        persistence_worker(settings, redis, pool),
        Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff,
    ):
        for n in range(3):
            await staff.publish(family, f"message {n}")
        await staff.publish(child, "une photo de groupe, plus tard")
        await persisted(pool, 4)
    folder = tmp_path / "backup"
    await backup(settings, folder)
    async with new_deployment(settings, tmp_path) as target:
        # The new deployment was started once (its schema is there, empty), and its Redis is
        # an older one: the household channel's sequence stands at 1, behind the restored messages.
        assert target.database_url is not None
        async with open_pool(target.database_url, max_size=1) as fresh:
            await migrate(fresh)
        keys = Keys(target.redis_prefix, target.partitions)
        await redis.set(keys.channel(Channel.parse(family)).seq, 1)
        await redis.set(keys.channel(Channel.parse(family)).epoch, "old-epoch")
        await restore(target, folder)
        async with (
            running_gateway(target) as again,
            Client.connect(again.ws, await again.login("staff@demo.test", accept_terms=False)) as staff,
        ):
            assert (await staff.publish(family, "suite"))["seq"] == 4
            assert (await staff.publish(child, "suite"))["seq"] == 2
            assert (await staff.subscribe(family))["epoch"] != "old-epoch"


async def test_restore_refuses_a_deployment_that_holds_data(
    gateway: Gateway, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "backup"
    await backup(settings, folder)
    target = replace(settings, media_dir=tmp_path / "other-media")
    with pytest.raises(BackupError, match="already holds structures"):
        await restore(target, folder)
    assert stored_objects(tmp_path / "other-media") == {}
    # The operator's command: a clear message, exit status 1.
    code, out = await run_cli("restore", str(folder), env=procreche_env(settings, tmp_path / "data"))
    assert code == 1, out
    assert "procreche: the database already holds structures" in out


@pytest.mark.parametrize("damage", ["media", "dump", "manifest"])
async def test_restore_refuses_a_damaged_backup_and_writes_nothing(
    gateway: Gateway, settings: Settings, tmp_path: Path, damage: str
) -> None:
    staff = await gateway.login("staff@demo.test")
    assert (await upload(gateway, staff, jpeg_with_metadata(tmp_path / "p.jpg").read_bytes())).status_code == 202
    folder = tmp_path / "backup"
    manifest = await backup(settings, folder)
    if damage == "media":
        victim = folder / MEDIA_DIR / manifest.media[0].key
    elif damage == "dump":
        victim = folder / DUMP_FILE
    else:
        victim = folder / MANIFEST_FILE
    data = bytearray(victim.read_bytes())
    if damage == "manifest":
        # A key that would lead out of the backup folder.
        data = bytearray(json.dumps(json.loads(data) | {"vanished": ["../../etc/passwd"]}).encode())
    else:
        data[len(data) // 2] ^= 0x01  # same size, one bit flipped
    victim.write_bytes(bytes(data))
    async with new_deployment(settings, tmp_path) as target:
        assert target.database_url is not None
        with pytest.raises(BackupError, match="nothing was restored"):
            await restore(target, folder)
        assert await public_tables(target.database_url) == 0
        assert not target.media_root.exists()


async def test_an_object_lost_before_the_backup_fails_it_and_its_upload_is_restored_rejected(
    gateway: Gateway, settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    staff = await gateway.login("staff@demo.test")
    uploaded = await upload(gateway, staff, jpeg_with_metadata(tmp_path / "lost.jpg").read_bytes())
    media_id = uuid.UUID(uploaded.json()["id"])
    key = await pool.fetchval("SELECT incoming_key FROM media WHERE id = $1", media_id)
    (settings.media_root / key).unlink()
    folder = tmp_path / "backup"
    with pytest.raises(BackupError, match=r"backup written to .*, but 1 media object\(s\) .* missing"):
        await backup(settings, folder)
    assert read_manifest(folder).missing == (key,)
    async with new_deployment(settings, tmp_path) as target:
        assert target.database_url is not None
        assert (await restore(target, folder)).uploads_rejected == 1
        conn = await asyncpg.connect(target.database_url)
        try:
            row = await conn.fetchrow("SELECT state, reject_code, incoming_key FROM media WHERE id = $1", media_id)
        finally:
            await conn.close()
        assert row is not None
        assert dict(row) == {"state": "rejected", "reject_code": "media_unreadable", "incoming_key": None}


async def test_backup_refuses_a_folder_that_is_not_empty(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "backup"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(BackupError, match="not empty"):
        await backup(settings, folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    with pytest.raises(BackupError, match="not a folder"):
        await backup(settings, folder / "notes.txt")


async def test_the_commands_back_up_and_restore_an_installation_with_no_configuration(tmp_path: Path) -> None:
    """Embedded PostgreSQL both sides: pg_dump and pg_restore are the pgserver wheel's own."""
    source, target, folder = tmp_path / "source", tmp_path / "target", tmp_path / "backup"
    code, out = await run_cli("demo", env=procreche_env(None, source))
    assert code == 0, out
    code, out = await run_cli("backup", str(folder), env=procreche_env(None, source))
    assert code == 0, out
    assert f"procreche: backup written to {folder}" in out
    code, out = await run_cli("restore", str(folder), env=procreche_env(None, target))
    assert code == 0, out
    assert f"procreche: restored {folder}" in out
    code, out = await run_cli("restore", str(folder), env=procreche_env(None, target))
    assert code == 1, out
    assert "already holds structures" in out
