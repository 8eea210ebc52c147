"""This gateway's side of maintenance mode (realtime/maintenance.py): it keeps the current
state in memory, read at start, at each announced switch and every `RECHECK_SECONDS` in case
an announcement was lost with the live feed; it answers every API call but
`GET /api/maintenance` with `503 maintenance` meanwhile, and moves its clients off when the
mode starts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.problems import problem
from realtime import maintenance
from realtime.database import Pool
from realtime.errors import TRANSIENT
from realtime.maintenance import RETRY_AFTER_SECONDS, Maintenance

log = logging.getLogger("procreche.gateway")

RECHECK_SECONDS = 30.0
STATE_PATH = "/api/maintenance"


class MaintenanceWatch:
    """`on_start` runs when the mode goes from off to on: it moves the clients off."""

    def __init__(self, pool: Pool, on_start: Callable[[Maintenance], Coroutine[Any, Any, None]]) -> None:
        self.pool = pool
        self.on_start = on_start
        self.current: Maintenance | None = None
        self._wake = asyncio.Event()
        self._moving: set[asyncio.Task[None]] = set()

    def changed(self) -> None:
        self._wake.set()

    async def reload(self) -> None:
        was, self.current = self.current, await maintenance.current(self.pool)
        if self.current is not None and was is None:
            log.warning("maintenance mode on: %s", self.current.message)
            task = asyncio.get_running_loop().create_task(self.on_start(self.current))
            self._moving.add(task)
            task.add_done_callback(self._moving.discard)
        elif self.current is None and was is not None:
            log.warning("maintenance mode off")

    async def run(self) -> None:
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), RECHECK_SECONDS)
                self._wake.clear()
                try:
                    await self.reload()
                except TRANSIENT:
                    log.warning("reading the maintenance state failed; retrying at the next round")
        finally:
            for task in self._moving:
                task.cancel()


def refusal(state: Maintenance) -> Response:
    response = problem(503, "maintenance", state.message)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class MaintenanceGate:
    """ASGI middleware: while maintenance is on, `/api/…` answers `503 maintenance` (the
    static app still loads, and shows the message it gets)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/") and scope["path"] != STATE_PATH:
            state = _watch(scope).current
            if state is not None:
                await refusal(state)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _watch(scope: Scope) -> MaintenanceWatch:
    watch: MaintenanceWatch = scope["app"].state.services.maintenance
    return watch


async def state(request: Request) -> Response:
    """No token needed: a client that got `503 maintenance` polls it to know when to come back."""
    current = _watch(request.scope).current
    return JSONResponse({"active": current is not None, **(current.public() if current else {})})


route = Route(STATE_PATH, state, methods=["GET"])
