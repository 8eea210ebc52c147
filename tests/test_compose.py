"""The production topology as files: docker-compose.yml, deploy/nginx.conf, Dockerfile.

Docker cannot run here, and PyYAML is not a dependency: docker-compose.yml is read with a
small parser for the subset of YAML it is written in (block mappings and sequences, JSON
flow sequences and quoted strings, folded `>-` scalars), which fails loudly on anything
else. Its structure is checked, and each procreche service's environment goes through
`Settings.from_env`, as the container would."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from realtime.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PROCRECHE_SERVICES = ("gateway", "worker-a", "worker-b")
SHARED = (
    "DATABASE_URL",
    "REDIS_URL",
    "PROCRECHE_REDIS_PREFIX",
    "PROCRECHE_PARTITIONS",
    # Gateways store uploads and sign links; workers process them: one bucket for all.
    "S3_BUCKET",
    "S3_ENDPOINT_URL",
    "S3_PUBLIC_URL",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
)


def parse_yaml(text: str) -> Any:
    lines = [
        (len(line) - len(line.lstrip(" ")), line.strip())
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    value, end = _block(lines, 0, lines[0][0])
    assert end == len(lines), f"unparsed from line {lines[end]}"
    return value


def _block(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    if lines[i][1].startswith("- "):
        items: list[Any] = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
            item, i = _value(lines, i, indent, lines[i][1][2:].strip())
            items.append(item)
        return items, i
    mapping: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent:
        key, colon, rest = lines[i][1].partition(":")
        assert colon, f"not a mapping entry: {lines[i]}"
        assert key not in mapping, f"duplicate key {key}"
        mapping[key], i = _value(lines, i, indent, rest.strip())
    return mapping, i


def _value(lines: list[tuple[int, str]], i: int, indent: int, rest: str) -> tuple[Any, int]:
    deeper = i + 1 < len(lines) and lines[i + 1][0] > indent
    if rest in (">", ">-"):
        end = i + 1
        while end < len(lines) and lines[end][0] > indent:
            end += 1
        return " ".join(content for _, content in lines[i + 1 : end]), end
    if rest == "":
        return _block(lines, i + 1, lines[i + 1][0]) if deeper else (None, i + 1)
    assert not deeper, f"unexpected nested block after {lines[i]}"
    if rest.startswith(("[", '"')):
        return json.loads(rest), i + 1
    assert not rest.startswith(("{", "'", "&", "*", "|")), f"YAML outside the supported subset: {rest}"
    return rest, i + 1


def interpolate(value: str) -> str:
    """Compose's `${NAME:-default}` and `${NAME:?error}`, with placeholders for secrets."""
    return re.sub(r"\$\{(\w+):([-?])([^}]*)\}", lambda m: m.group(3) if m.group(2) == "-" else f"<{m.group(1)}>", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    parsed: dict[str, Any] = parse_yaml((ROOT / "docker-compose.yml").read_text())
    return parsed


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {name: interpolate(str(value or "")) for name, value in service["environment"].items()}


def test_the_topology_has_every_service(services: dict[str, Any]) -> None:
    assert set(services) == {"nginx", *PROCRECHE_SERVICES, "postgres", "redis", "minio", "minio-bucket"}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")


def test_procreche_services_share_their_servers_and_partitions(services: dict[str, Any]) -> None:
    for name in PROCRECHE_SERVICES:
        assert services[name]["build"] == "."
        assert services[name]["image"] == services["gateway"]["image"]
        # As the container would read it: no SettingsError.
        Settings.from_env(environment(services[name]))
    shared = {name: {k: environment(services[name])[k] for k in SHARED} for name in PROCRECHE_SERVICES}
    assert all(env == shared["gateway"] for env in shared.values()), shared
    assert shared["gateway"]["DATABASE_URL"].endswith("@postgres:5432/procreche")
    assert shared["gateway"]["REDIS_URL"].endswith("@redis:6379/0")
    assert shared["gateway"]["S3_ENDPOINT_URL"] == "http://minio:9000"


def test_nginx_streams_uploads_and_serves_media_links_from_the_private_bucket() -> None:
    directives = re.sub(r"#[^\n]*", "", (ROOT / "deploy" / "nginx.conf").read_text())
    upload = re.search(r"location = /api/media \{[^}]*\}", directives)
    assert upload is not None
    assert "proxy_request_buffering off;" in upload.group()
    limit = re.search(r"client_max_body_size (\d+)m;", upload.group())
    assert limit is not None
    assert int(limit.group(1)) * 1024 * 1024 > Settings().media_max_bytes
    files = re.search(r"location /procreche-media/ \{[^}]*\}", directives)
    assert files is not None
    # MinIO checks each link's signature against the Host it was signed for.
    assert "proxy_pass http://minio:9000;" in files.group()


def test_gateways_run_without_worker_behind_nginx_with_health_checks(services: dict[str, Any]) -> None:
    gateway = services["gateway"]
    assert gateway["command"] == ["procreche", "serve", "--no-worker"]
    assert int(gateway["deploy"]["replicas"]) >= 2
    assert "ports" not in gateway, "only nginx is published"
    assert "/healthz" in " ".join(gateway["healthcheck"]["test"])
    assert environment(gateway)["PROCRECHE_HOST"] == "0.0.0.0"
    nginx = services["nginx"]
    assert nginx["ports"] == ["80:80"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert nginx["depends_on"]["gateway"]["condition"] == "service_healthy"


def test_workers_split_the_partitions_between_them(services: dict[str, Any]) -> None:
    settings = [Settings.from_env(environment(services[name])) for name in ("worker-a", "worker-b")]
    owned = [s.worker_partitions for s in settings]
    assert all(p for p in owned), "each worker names its partitions"
    assert not (owned[0] or set()) & (owned[1] or set()), "disjoint"
    assert (owned[0] or set()) | (owned[1] or set()) == set(range(settings[0].partitions)), "all covered"
    for name in ("worker-a", "worker-b"):
        assert services[name]["command"] == ["procreche", "worker"]


def test_redis_keeps_an_aof_and_never_evicts(services: dict[str, Any]) -> None:
    command = services["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert command[0] == "redis-server"
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"
    assert "redis-data:/data" in services["redis"]["volumes"]


def test_minio_and_its_bucket_job(services: dict[str, Any]) -> None:
    assert services["minio"]["image"].startswith("minio/minio:RELEASE.")
    job = services["minio-bucket"]
    assert job["depends_on"]["minio"]["condition"] == "service_healthy"
    assert job["restart"] == "no"
    script = " ".join(job["command"])
    assert "mc mb --ignore-existing" in script
    assert "mc anonymous set none" in script, "media are never public"
    assert "ports" not in services["minio"]


def test_nginx_proxies_websockets_without_sticky_sessions(services: dict[str, Any]) -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    directives = re.sub(r"#[^\n]*", "", conf)
    assert directives.count("{") == directives.count("}")
    port = environment(services["gateway"])["PROCRECHE_PORT"]
    assert re.search(rf"server gateway:{port}\b", directives)
    assert not re.search(r"\b(ip_hash|hash|sticky)\b", directives), "no sticky sessions"
    ws = directives[directives.index("location = /ws") :]
    ws = ws[: ws.index("}")]
    assert "proxy_set_header Upgrade $http_upgrade;" in ws
    assert "proxy_set_header Connection $connection_upgrade;" in ws
    # Longer than the gateways' ping interval and idle timeout: nginx never closes first.
    read_timeout = int(re.findall(r"proxy_read_timeout (\d+)s;", ws)[0])
    defaults = Settings()
    assert read_timeout > max(defaults.ping_interval_seconds, defaults.idle_timeout_seconds)
    # A location that sets one proxy header inherits none: each proxying location sets
    # Host (the Origin check compares with it, port included) and X-Forwarded-*.
    for block in re.findall(r"location [^{]*\{[^}]*\}", directives):
        if "proxy_pass" in block:
            assert "proxy_set_header Host $http_host;" in block, block
            assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in block, block
            assert "proxy_set_header X-Forwarded-Proto $scheme;" in block, block


def test_the_image_is_built_from_the_project_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert re.search(r"^RUN pip install \.", dockerfile, re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert users
    assert users[-1] not in ("root", "0")
    ignored = (ROOT / ".dockerignore").read_text()
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, re.MULTILINE):
        for path in source.split():
            assert (ROOT / path).exists(), path
            assert f"!{path.rstrip('/')}" in ignored, f"{path} is kept out of the build context"
