"""The backup folder's format: what `procreche backup` writes and `procreche restore` checks.

    DIR/manifest.json     this description, written last: a folder without it is no backup
    DIR/database.dump     pg_dump's custom format
    DIR/media/<key>       one file per media store object, under its key

The manifest is read as untrusted input: every field is checked for its type, every key
with the media store's own rule (so no key can point outside DIR/media), before any file
is opened.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realtime.media_store import check_content_type, check_key

FORMAT = "procreche-backup"
VERSION = 1
MANIFEST_FILE = "manifest.json"
DUMP_FILE = "database.dump"
MEDIA_DIR = "media"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """manifest.json is missing, unreadable, of another format, or inconsistent."""


@dataclass(frozen=True)
class FileSum:
    bytes: int
    sha256: str


@dataclass(frozen=True)
class MediaFile:
    key: str
    content_type: str
    sum: FileSum


@dataclass(frozen=True)
class Manifest:
    created_at: str
    procreche_version: str
    schema_sha256: str
    # Rows per table of the dumped database, counted in the dump's own snapshot.
    tables: dict[str, int]
    server_version: str
    server_major: int
    pg_dump_version: str
    pg_dump_major: int
    database: FileSum
    media: tuple[MediaFile, ...]
    # Keys the database named that the store no longer held when they were copied, because
    # the database changed meanwhile (an upload processed, an export expired).
    vanished: tuple[str, ...]
    # Keys the database still names but the store does not hold: lost before the backup.
    missing: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "created_at": self.created_at,
            "procreche": {
                "version": self.procreche_version,
                "schema_sha256": self.schema_sha256,
                "tables": self.tables,
            },
            "postgresql": {
                "server_version": self.server_version,
                "server_major": self.server_major,
                "pg_dump_version": self.pg_dump_version,
                "pg_dump_major": self.pg_dump_major,
            },
            "database": {"file": DUMP_FILE, "format": "custom", **_sum_json(self.database)},
            "media": [{"key": m.key, "content_type": m.content_type, **_sum_json(m.sum)} for m in self.media],
            "vanished": list(self.vanished),
            "missing": list(self.missing),
        }

    @classmethod
    def from_json(cls, data: object) -> Manifest:
        top = _object(data, "the manifest")
        if top.get("format") != FORMAT:
            raise ManifestError(f"not a procreche backup (format {top.get('format')!r}, expected {FORMAT!r})")
        if top.get("version") != VERSION:
            raise ManifestError(f"backup format version {top.get('version')!r} is not supported (this is {VERSION})")
        app = _object(top.get("procreche"), "procreche")
        pg = _object(top.get("postgresql"), "postgresql")
        db = _object(top.get("database"), "database")
        if db.get("file") != DUMP_FILE or db.get("format") != "custom":
            raise ManifestError(f"database: expected the custom-format dump {DUMP_FILE}")
        tables = _object(app.get("tables"), "procreche.tables")
        media = [_media_file(entry) for entry in _list(top.get("media"), "media")]
        keys = [m.key for m in media]
        if len(set(keys)) != len(keys):
            raise ManifestError("media: a key is listed twice")
        return cls(
            created_at=_text(top, "created_at"),
            procreche_version=_text(app, "version"),
            schema_sha256=_sha256(app, "schema_sha256"),
            tables={_table_name(name): _count(tables, name) for name in tables},
            server_version=_text(pg, "server_version"),
            server_major=_count(pg, "server_major"),
            pg_dump_version=_text(pg, "pg_dump_version"),
            pg_dump_major=_count(pg, "pg_dump_major"),
            database=_sum(db),
            media=tuple(media),
            vanished=tuple(_key(k) for k in _list(top.get("vanished"), "vanished")),
            missing=tuple(_key(k) for k in _list(top.get("missing"), "missing")),
        )


def file_sum(path: Path) -> FileSum:
    """Size and SHA-256 of a file. Blocking: call it in a thread."""
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256")
        return FileSum(f.tell(), digest.hexdigest())


def read_manifest(directory: Path) -> Manifest:
    """The folder's manifest, checked. Blocking: call it in a thread."""
    path = directory / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path} is missing: not a backup, or one that did not finish") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"{path} cannot be read: {exc}") from None
    return Manifest.from_json(data)


def _sum_json(s: FileSum) -> dict[str, Any]:
    return {"bytes": s.bytes, "sha256": s.sha256}


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(f"{what}: expected an object")
    return value


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ManifestError(f"{what}: expected a list")
    return value


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{name}: expected a string")
    return value


def _count(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    # bool is an int to Python, not to a manifest.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ManifestError(f"{name}: expected a whole number ≥ 0")
    return value


def _sha256(data: dict[str, Any], name: str) -> str:
    value = _text(data, name)
    if _SHA256.fullmatch(value) is None:
        raise ManifestError(f"{name}: expected a SHA-256 in lower-case hex")
    return value


def _sum(data: dict[str, Any]) -> FileSum:
    return FileSum(_count(data, "bytes"), _sha256(data, "sha256"))


def _key(value: object) -> str:
    if not isinstance(value, str):
        raise ManifestError("media: expected a key (a string)")
    try:
        return check_key(value)
    except ValueError as exc:
        raise ManifestError(f"media: {exc}") from None


def _table_name(name: str) -> str:
    if not name.isidentifier():
        raise ManifestError(f"procreche.tables: {name[:80]!r} is not a table name")
    return name


def _media_file(entry: object) -> MediaFile:
    data = _object(entry, "a media entry")
    try:
        content_type = check_content_type(_text(data, "content_type"))
    except ValueError as exc:
        raise ManifestError(f"media: {exc}") from None
    return MediaFile(_key(data.get("key")), content_type, _sum(data))
