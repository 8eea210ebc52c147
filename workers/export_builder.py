"""An export's zip: `export.json` and the original of each media it shows, written to a
temporary file (docs/export.md). Every file operation runs in a thread: a structure's zip
may hold gigabytes of video, and the worker's event loop also serves its other jobs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zipfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

from realtime.admin import iso
from realtime.database import Pool
from realtime.directory import Directory
from realtime.exports import Export
from realtime.media_store import MediaStore, MissingObject
from realtime.permissions import Principal
from workers.export_scopes import Bundle, gather

log = logging.getLogger("procreche.exports")

FORMAT = "procreche-export"
VERSION = 1
DOCUMENT = "export.json"
# Progress, in percent, once the data is read and once every media file is in the zip.
GATHERED = 20
FILES_IN = 90

Progress: TypeAlias = Callable[[int], Awaitable[None]]


def document(export: Export, bundle: Bundle, files: int) -> dict[str, Any]:
    counts = {name: len(rows) for name, rows in bundle.sections.items()} | {"media_files": files}
    return {
        "format": FORMAT,
        "version": VERSION,
        "generated_at": iso(datetime.now(UTC)),
        "scope": export.scope,
        "subject": export.subject,
        "counts": counts,
        **bundle.sections,
    }


def _write_document(archive: zipfile.ZipFile, content: dict[str, Any]) -> None:
    data = json.dumps(content, ensure_ascii=False, indent=1).encode()
    archive.writestr(DOCUMENT, data, compress_type=zipfile.ZIP_DEFLATED)


def _add_file(archive: zipfile.ZipFile, source: Path, arcname: str) -> None:
    # Photos and videos are compressed already: stored as they are.
    archive.write(source, arcname, compress_type=zipfile.ZIP_STORED)
    source.unlink()


async def write_zip(store: MediaStore, export: Export, bundle: Bundle, path: Path, progress: Progress) -> int:
    """Write the zip at `path`; returns its size in bytes. A media file missing from the
    store is left out (its `file` is null) rather than failing the whole export."""
    by_id = {m["id"]: m for m in bundle.sections["media"]}
    incoming = path.with_name("incoming")
    archive = await asyncio.to_thread(zipfile.ZipFile, path, "w")
    written = 0
    try:
        for n, item in enumerate(bundle.files, 1):
            try:
                await store.fetch(item.key, incoming)
            except MissingObject:
                log.warning("export %s: media %s has no original in the store; left out", export.id, item.media_id)
                by_id[item.media_id]["file"] = None
            else:
                await asyncio.to_thread(_add_file, archive, incoming, item.arcname)
                written += 1
            await progress(GATHERED + (FILES_IN - GATHERED) * n // len(bundle.files))
        await asyncio.to_thread(_write_document, archive, document(export, bundle, written))
    finally:
        await asyncio.to_thread(archive.close)
    return (await asyncio.to_thread(path.stat)).st_size


async def build(
    pool: Pool,
    directory: Directory,
    store: MediaStore,
    export: Export,
    principal: Principal,
    work: Path,
    progress: Progress,
) -> tuple[Path, int]:
    """Gather the export's data and write its zip under `work`: the zip's path and size."""
    bundle = await gather(pool, directory, export, principal)
    await progress(GATHERED)
    path = work / "export.zip"
    size = await write_zip(store, export, bundle, path, progress)
    return path, size
