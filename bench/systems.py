"""The systems compared, each installed in its own environment and started as one process.

procreche runs from the project's own environment (`procreche serve --no-worker`, plus a
`procreche worker` process beside it, as in production). Each peer (bench/peers/<name>/,
contract in bench/peers/README.md) is copied to a cache folder named after the hash of its
files and installed there — a virtualenv from its pinned requirements.txt, or `npm ci` from
its package-lock.json — once per machine and version: later runs reuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent / "peers"
INSTALL_TIMEOUT = 900
PEERS = ("channels", "socketio_python", "socketio_node", "websockets_relay")
LABELS = {
    "procreche": "procreche",
    "channels": "Django Channels + channels_redis",
    "socketio_python": "python-socketio + Redis manager",
    "socketio_node": "Socket.IO on Node + Redis adapter",
    "websockets_relay": "bare websockets + Redis (ceiling)",
}
UVICORN = ("-m", "uvicorn", "--no-access-log", "--log-level", "warning")
ENTRY_POINTS = {
    "channels": (*UVICORN, "peer_channels:application"),
    "socketio_python": (*UVICORN, "peer_socketio:app"),
    "websockets_relay": ("peer_relay.py",),
}

KEY_PACKAGES = {  # the versions worth reporting, of all those installed
    "channels": ("django", "channels", "channels-redis", "uvicorn", "uvloop", "redis"),
    "socketio_python": ("python-socketio", "python-engineio", "uvicorn", "uvloop", "redis"),
    "websockets_relay": ("websockets", "uvloop", "redis"),
}


@dataclass(frozen=True)
class Installed:
    name: str
    folder: Path
    argv: tuple[str, ...]  # host and port come from BENCH_HOST / BENCH_PORT (and --host/--port for uvicorn)
    versions: dict[str, str]


def cache_root() -> Path:
    base = os.environ.get("PROCRECHE_BENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "procreche-bench"
    )
    return Path(base)


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "node_modules" not in p.parts):
        h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def run(argv: Sequence[str], cwd: Path) -> None:
    result = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed in {cwd}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def install(name: str, log: Path | None = None) -> Installed:
    source = PEERS_DIR / name
    target = cache_root() / f"{name}-{digest(source)}"
    stamp = target / ".installed"
    if not stamp.exists():
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("node_modules", "__pycache__"))
        if (target / "package.json").exists():
            run(("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"), target)
        else:
            run((sys.executable, "-m", "venv", "venv"), target)
            run((str(target / "venv/bin/python"), "-m", "pip", "install", "--quiet", "-r", "requirements.txt"), target)
        stamp.write_text("ok\n")
    if (target / "package.json").exists():
        return Installed(name, target, ("node", "server.js"), node_versions(target))
    return Installed(
        name, target, (str(target / "venv/bin/python"), *ENTRY_POINTS[name]), python_versions(name, target)
    )


def python_versions(name: str, target: Path) -> dict[str, str]:
    wanted = KEY_PACKAGES[name]
    out = subprocess.run(
        [str(target / "venv/bin/python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout
    versions = {"python": sys.version.split()[0]}
    for line in out.splitlines():
        package, _, version = line.partition("==")
        if package.lower() in wanted:
            versions[package.lower()] = version
    return versions


def node_versions(target: Path) -> dict[str, str]:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30, check=False)
    versions = {"node": node.stdout.strip()}
    lock = json.loads((target / "package-lock.json").read_text())
    for package in json.loads((target / "package.json").read_text()).get("dependencies", {}):
        entry = lock.get("packages", {}).get(f"node_modules/{package}", {})
        versions[package] = str(entry.get("version", "?"))
    return versions
