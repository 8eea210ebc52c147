"""The Starlette application: routes, error handlers, and the lifespan that owns the services."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, WebSocketRoute
from starlette.staticfiles import StaticFiles

from gateway import (
    admin_api,
    consent_api,
    erasure_api,
    export_api,
    http_api,
    maintenance,
    media_api,
    metrics,
    openapi,
    reports_api,
)
from gateway.problems import handle_procreche_error, handle_unexpected
from gateway.services import Services, open_services
from gateway.ws import websocket_endpoint
from realtime.errors import ProcrecheError
from realtime.metrics import Metrics
from realtime.settings import Settings

STATIC = Path(__file__).with_name("static")


async def _after_drain(services: Services, on_drained: Callable[[], None] | None) -> None:
    await services.drained.wait()
    if on_drained is not None:
        on_drained()


def create_app(
    settings: Settings, on_drained: Callable[[], None] | None = None, process_metrics: Metrics | None = None
) -> Starlette:
    """`on_drained` is called once a drain (SIGTERM, `procreche drain`) is complete: the
    process can exit. `process_metrics`: the process's metrics, which /metrics shows (with
    the workers' in `procreche serve`); the app's own otherwise."""
    shown = process_metrics if process_metrics is not None else Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_services(settings) as services:
            app.state.services = services
            forget = shown.add(metrics.GatewaySource(services))
            watcher = asyncio.create_task(_after_drain(services, on_drained))
            try:
                yield
            finally:
                forget()
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    app = Starlette(
        routes=[
            *http_api.routes,
            *admin_api.routes,
            *consent_api.routes,
            *media_api.routes,
            *export_api.routes,
            *reports_api.routes,
            *erasure_api.routes,
            maintenance.route,
            openapi.route,
            WebSocketRoute("/ws", websocket_endpoint),
            metrics.route,
            Mount("/", StaticFiles(directory=STATIC, html=True), name="static"),
        ],
        exception_handlers={ProcrecheError: handle_procreche_error, Exception: handle_unexpected},
        middleware=[Middleware(maintenance.MaintenanceGate)],
        lifespan=lifespan,
    )
    app.state.metrics = shown
    return app
