"""PostgreSQL's client programs (`pg_dump`, `pg_restore`): finding the right ones, and
running them without blocking the event loop or showing the password.

A `pg_dump` refuses a server newer than itself, and a `pg_restore` cannot read an archive
written by a newer `pg_dump`, so the version matters. Candidates, in order: the folder an
operator names (`--pg-bin`), Debian's side-by-side installs (/usr/lib/postgresql/N/bin),
every folder on PATH, and the binaries the pgserver wheel ships for the embedded server.
The one whose major version is the server's wins; failing that, the oldest newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from realtime.errors import ProcrecheError

log = logging.getLogger("procreche.backup")

VERSION_TIMEOUT = 10.0
DEBIAN_DIRS = "/usr/lib/postgresql"
_VERSION = re.compile(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?")
# What libpq is told through the environment, never on a command line (`ps` shows those).
_SECRET_PARAMETERS = {"password": "PGPASSWORD"}
_STDERR_TAIL = 2000


class PgToolError(ProcrecheError):
    """A PostgreSQL client program is missing, unsuitable, or failed."""


@dataclass(frozen=True)
class PgTool:
    path: Path
    major: int
    version: str


@dataclass(frozen=True)
class Target:
    """How a client program reaches a database: a libpq URL without the password, and the
    environment that carries the password."""

    url: str
    env: Mapping[str, str]


def target(database_url: str) -> Target:
    """Split a database URL for libpq: the password (in the authority or the query) moves
    to PGPASSWORD, so that it appears in no argument list and no log line."""
    parts = urlsplit(database_url)
    env: dict[str, str] = {}
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if colon and password:
            env["PGPASSWORD"] = unquote(password)
        netloc = f"{user}@{hosts}" if user else hosts
    else:
        netloc = parts.netloc
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(name in _SECRET_PARAMETERS for name, _ in pairs):
        for name, value in pairs:
            if name in _SECRET_PARAMETERS:
                env[_SECRET_PARAMETERS[name]] = value
        query = urlencode([(name, value) for name, value in pairs if name not in _SECRET_PARAMETERS])
    return Target(urlunsplit(parts._replace(netloc=netloc, query=query)), env)


def pgserver_bin() -> Path | None:
    """The bin folder of the pgserver wheel, found without importing it (its import wants
    a runtime folder and a lock)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def candidate_dirs(explicit: Path | None) -> list[Path]:
    if explicit is not None:
        # Named by the operator: that folder only, so that a mistake is not papered over.
        return [explicit]
    debian = sorted(Path(DEBIAN_DIRS).glob("*/bin"), reverse=True)
    on_path = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    embedded = pgserver_bin()
    return [*debian, *on_path, *([embedded] if embedded is not None else [])]


async def probe(path: Path) -> PgTool | None:
    """The program's version, from `--version`; None if it is not a PostgreSQL program that runs."""
    try:
        code, out, _ = await run(path, ["--version"], env={}, timeout=VERSION_TIMEOUT)
    except (OSError, PgToolError):
        return None
    match = _VERSION.search(out.decode(errors="replace"))
    if code != 0 or match is None:
        return None
    version = f"{match[1]}.{match[2]}" if match[2] else match[1]
    return PgTool(path, int(match[1]), version)


async def find(name: str, server_major: int, *, at_least: int = 0, explicit_dir: Path | None = None) -> PgTool:
    """The `name` program for a server of `server_major`: that major version if there is
    one, else the oldest newer one. `at_least`: a floor of its own (pg_restore must be as
    new as the pg_dump that wrote the archive)."""
    floor = max(server_major, at_least)
    # Stats and a package lookup, possibly on network filesystems: off the event loop.
    paths = await asyncio.to_thread(lambda: _executables(name, candidate_dirs(explicit_dir)))
    found = [tool for tool in [await probe(path) for path in paths] if tool is not None]
    suitable = sorted((t for t in found if t.major >= floor), key=lambda t: (t.major != server_major, t.major))
    if suitable:
        return suitable[0]
    have = ", ".join(f"{t.path} ({t.version})" for t in found) or "none"
    where = f"in {explicit_dir}" if explicit_dir is not None else "on PATH, in /usr/lib/postgresql/*/bin or in pgserver"
    raise PgToolError(
        f"{name} for PostgreSQL {floor} or later is needed and none was found {where} (found: {have}); "
        f"install PostgreSQL {floor}'s client programs or name their folder with --pg-bin"
    )


def _executables(name: str, folders: list[Path]) -> list[Path]:
    """`name` in each folder where it is an executable file, each program once (PATH
    often holds symbolic links to the same one)."""
    found: dict[Path, Path] = {}
    for folder in folders:
        path = folder / name
        if path.is_file() and os.access(path, os.X_OK):
            found.setdefault(path.resolve(), path)
    return list(found.values())


async def run(
    program: Path, args: Sequence[str], *, env: Mapping[str, str], timeout: float
) -> tuple[int, bytes, bytes]:
    """Run a program to its end: exit code, stdout, stderr. Killed if it outlives
    `timeout` (PgToolError) or if we are cancelled."""
    process = await asyncio.create_subprocess_exec(
        str(program),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except BaseException as exc:
        # Timed out or cancelled: the program must not outlive the command.
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await asyncio.shield(process.wait())
        if isinstance(exc, TimeoutError):
            raise PgToolError(f"{program.name} did not finish within {timeout:.0f} s") from None
        raise
    assert process.returncode is not None
    return process.returncode, out, err


async def run_checked(tool: PgTool, args: Sequence[str], *, db: Target | None, timeout: float) -> bytes:
    """Run a client program, against the database `db` if given; its stdout, or PgToolError
    with the end of its stderr (libpq's messages name hosts and users, never the password)."""
    log.info("running %s %s", tool.path, " ".join(args))
    env: dict[str, str] = {}
    if db is not None:
        args = [*args, f"--dbname={db.url}"]
        env = {"PGCONNECT_TIMEOUT": os.environ.get("PGCONNECT_TIMEOUT", "15"), **db.env}
    code, out, err = await run(tool.path, args, env=env, timeout=timeout)
    if code != 0:
        detail = err.decode(errors="replace").strip()[-_STDERR_TAIL:]
        raise PgToolError(f"{tool.path.name} failed (exit {code}): {detail}")
    return out
