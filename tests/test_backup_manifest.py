"""The backup manifest is read as untrusted input: anything malformed is refused before a
file is opened."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from realtime.backup_manifest import FileSum, Manifest, ManifestError, MediaFile, file_sum, read_manifest

SUM = FileSum(3, "a" * 64)


def manifest() -> Manifest:
    return Manifest(
        created_at="2026-09-01T08:00:00Z",
        procreche_version="0.1.0",
        schema_sha256="b" * 64,
        tables={"messages": 4, "users": 6},
        server_version="16.2",
        server_major=16,
        pg_dump_version="16.2",
        pg_dump_major=16,
        database=SUM,
        media=(MediaFile("s1/m/original.jpg", "image/jpeg", SUM),),
        vanished=("s1/n/incoming",),
        missing=(),
    )


def test_a_manifest_reads_back_as_written() -> None:
    assert Manifest.from_json(json.loads(json.dumps(manifest().to_json()))) == manifest()


def entry(**fields: Any) -> dict[str, Any]:
    return {"key": "s1/a", "content_type": "image/jpeg", "bytes": 3, "sha256": "a" * 64} | fields


def changed(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data = manifest().to_json()
    node = data
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("format",), "tarball", "not a procreche backup"),
        (("version",), 2, "version 2 is not supported"),
        (("media",), [entry(key="../../etc/passwd")], "key"),
        (("media",), [entry(content_type="image/jpeg\r\nX: y")], "type"),
        (("media",), [manifest().to_json()["media"][0]] * 2, "listed twice"),
        (("vanished",), ["/abs"], "key"),
        (("database", "bytes"), True, "whole number"),
        (("database", "sha256"), "A" * 64, "SHA-256"),
        (("database", "file"), "../dump", "custom-format dump"),
        (("procreche", "tables"), {"messages; DROP TABLE users": 1}, "not a table name"),
    ],
)
def test_a_malformed_manifest_is_refused(path: tuple[str, ...], value: Any, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        Manifest.from_json(changed(path, value))


def test_a_folder_without_a_manifest_is_no_backup(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="missing"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="cannot be read"):
        read_manifest(tmp_path)


def test_file_sum(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    assert file_sum(tmp_path / "f") == FileSum(3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
