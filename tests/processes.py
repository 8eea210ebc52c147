"""procreche as an operator runs it: `python -m gateway.cli …` in a child process, with an
environment, on 127.0.0.1 and a free port. Every process started here is killed on the way
out if it is still running, and every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from realtime.settings import Settings
from tests.conftest import DEMO_PASSWORD, free_socket, wait_for

HOST = "127.0.0.1"
CLI = ("-m", "gateway.cli")
STOP_TIMEOUT = 30.0


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
