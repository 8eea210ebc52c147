"""The media queue survives its workers: an abandoned job is taken over, a job that keeps
failing ends rejected, and concurrent uploads of a burst are all processed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from realtime.media import MAX_ATTEMPTS
from tests.conftest import Gateway, media_worker
from tests.media_samples import jpeg_with_metadata
from tests.test_media_api import processed, upload

pytestmark = pytest.mark.usefixtures("demo_families")


async def test_a_job_abandoned_by_a_dead_worker_is_taken_over(gateway: Gateway, tmp_path: Path) -> None:
    staff = await gateway.login("staff@demo.test")
    media_id = (await upload(gateway, staff, jpeg_with_metadata(tmp_path / "a.jpg").read_bytes())).json()["id"]
    # A worker claimed it and died: its lease ran out.
    claimed = await gateway.services.media.claim(timedelta(0))
    assert claimed is not None
    assert claimed.id == media_id
    async with media_worker(gateway):
        status = await processed(gateway, staff, media_id)
    assert status["state"] == "ready"


async def test_a_job_that_keeps_failing_is_rejected_after_its_attempts(gateway: Gateway, tmp_path: Path) -> None:
    staff = await gateway.login("staff@demo.test")
    media_id = (await upload(gateway, staff, jpeg_with_metadata(tmp_path / "b.jpg").read_bytes())).json()["id"]
    await gateway.services.pool.execute(
        "UPDATE media SET attempts = $2 WHERE id = $1", uuid.UUID(media_id), MAX_ATTEMPTS
    )
    async with media_worker(gateway):
        status = await processed(gateway, staff, media_id)
    assert status == {"id": media_id, "state": "rejected", "code": "media_unreadable"}


async def test_an_upload_whose_file_is_gone_is_rejected_and_the_next_one_processed(
    gateway: Gateway, tmp_path: Path
) -> None:
    staff = await gateway.login("staff@demo.test")
    lost, kept = [
        (await upload(gateway, staff, jpeg_with_metadata(tmp_path / f"{n}.jpg").read_bytes(), key=n)).json()["id"]
        for n in ("lost", "kept")
    ]
    key = await gateway.services.pool.fetchval("SELECT incoming_key FROM media WHERE id = $1", uuid.UUID(lost))
    await gateway.services.media_store.delete([key])
    async with media_worker(gateway):
        assert await processed(gateway, staff, lost) == {"id": lost, "state": "rejected", "code": "media_unreadable"}
        assert (await processed(gateway, staff, kept))["state"] == "ready"


async def test_a_burst_of_photos_is_processed_once_each(gateway: Gateway, tmp_path: Path) -> None:
    staff = await gateway.login("staff@demo.test")
    photos = [jpeg_with_metadata(tmp_path / f"{n}.jpg").read_bytes() for n in range(6)]
    responses = await asyncio.gather(*(upload(gateway, staff, p, key=f"burst-{n}") for n, p in enumerate(photos)))
    assert [r.status_code for r in responses] == [202] * 6
    async with media_worker(gateway), media_worker(gateway):
        states = [(await processed(gateway, staff, r.json()["id"]))["state"] for r in responses]
    assert states == ["ready"] * 6
    objects = [p for p in gateway.services.settings.media_root.rglob("*") if p.is_file() and p.name != ".signing-key"]
    # Three renditions each, no upload left behind, nothing processed twice.
    assert len(objects) == 18
    assert not [p for p in objects if p.name == "incoming"]
