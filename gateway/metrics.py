"""`/metrics`: the gateway's numbers, and a listener serving only /metrics for processes
that have no other HTTP (`procreche worker`).

/metrics has no authentication: it tells nothing of anyone's messages, but a lot about the
deployment. Gateways serve it on their own port, which nginx refuses to pass on from
outside (deploy/nginx.conf); the listener binds loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Generator, Iterable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.services import Services
from realtime.errors import ProcrecheError
from realtime.metrics import CONTENT_TYPE, Family, Metrics, Source, counter, gauge, histogram
from realtime.settings import Settings

log = logging.getLogger("procreche.metrics")

STOP_TIMEOUT = 5.0


class GatewaySource(Source):
    """What one gateway's services count; read at scrape time, never on the hot paths."""

    name = "gateway"

    def __init__(self, services: Services) -> None:
        self.services = services

    def families(self) -> Iterable[Family]:
        s = self.services
        yield gauge(
            "procreche_connections",
            "WebSocket connections open on this gateway (after the handshake, authenticated or not yet).",
            s.counts.connections,
        )
        yield gauge(
            "procreche_authenticated_connections",
            "WebSocket connections that have authenticated.",
            len(s.sessions.all()),
        )
        yield gauge(
            "procreche_subscriptions",
            "Channel subscriptions of this gateway's connections.",
            s.hub.subscriptions(),
        )
        yield gauge(
            "procreche_live_channels",
            "Channels this gateway follows on Redis pub/sub (those with a local subscriber).",
            s.hub.channels(),
        )
        yield counter(
            "procreche_publishes_total",
            "Publishes handled by this gateway, by outcome: ok (acknowledged), refused (the client's error: "
            "permission, validation, conflict), failed (PostgreSQL or Redis unavailable, or a bug).",
            dict(s.counts.publishes),
            label="outcome",
        )
        yield counter(
            "procreche_deliveries_total",
            "Live frames (messages and events) written to this gateway's subscribers; backlogs not included.",
            s.hub.delivered,
        )
        yield counter(
            "procreche_slow_consumers_total",
            "Connections closed because their unsent data passed PROCRECHE_OUTBOUND_BUFFER (4001).",
            s.hub.slow_closed,
        )
        yield histogram(
            "procreche_delivery_latency_seconds",
            "From a message's server timestamp (set by the publishing gateway) to its writing to this gateway's "
            "subscribers; one observation per message and gateway. Includes clock skew between gateway hosts.",
            s.live.latency,
        )
        yield gauge("procreche_draining", "1 while this gateway drains, else 0.", int(s.draining.is_set()))


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(await metrics.render(), media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})


route = Route("/metrics", metrics_endpoint, methods=["GET"])


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: the process's own handle SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def metrics_listener(metrics: Metrics, host: str, port: int) -> AsyncIterator[int]:
    """Serve `metrics` at http://host:port/metrics while the block runs; yields the port
    (the one the system chose if `port` is 0). A port that cannot be bound is an error
    here, before anything else starts."""
    app = Starlette(routes=[route])
    app.state.metrics = metrics
    loop = asyncio.get_running_loop()
    where = f"{host}:{port} (PROCRECHE_METRICS_HOST, PROCRECHE_METRICS_PORT)"
    try:
        family, _, proto, _, address = (await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))[0]
    except OSError as exc:
        raise ProcrecheError(f"cannot listen for metrics on {where}: {exc}") from exc
    # With its protocol named (TCP), not 0: asyncio turns Nagle off (TCP_NODELAY) only on
    # the connections of such a socket, and with Nagle on each answer waited ~40 ms for the
    # client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ProcrecheError(f"cannot listen for metrics on {where}: {exc}") from exc
    bound: int = sock.getsockname()[1]
    # No log_config, log_level nor access_log here: uvicorn applies them to its loggers
    # process-wide, which would change the gateway's own logging in `serve`.
    config = uvicorn.Config(app, lifespan="off", ws="none", log_config=None, log_level=None, timeout_keep_alive=5)
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="metrics-listener")
    log.info("metrics on http://%s:%d/metrics", host, bound)
    try:
        yield bound
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            sock.close()


@contextlib.asynccontextmanager
async def configured_listener(metrics: Metrics, settings: Settings) -> AsyncIterator[None]:
    """The listener of PROCRECHE_METRICS_PORT while the block runs, if it is set."""
    if settings.metrics_port is None:
        yield
        return
    async with metrics_listener(metrics, settings.metrics_host, settings.metrics_port):
        yield
