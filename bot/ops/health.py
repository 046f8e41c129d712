"""A small HTTP server for orchestrators and Prometheus: /healthz, /readyz and /metrics.

Liveness and readiness are separate on purpose: /healthz only says the process is up (a
restart would not help with anything else), while /readyz says whether the bot can do its
work right now (model workers loaded, database writable, Telegram reachable), so a load
balancer or an alert can tell "starting" or "degraded" from "dead".
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.ops.metrics import exposition

log = logging.getLogger(__name__)

Readiness = Callable[[], Awaitable[dict[str, bool]]]


class HealthServer:
    """Serves the three endpoints on `host:port`; port 0 picks a free port (see `port`)."""

    def __init__(self, host: str, port: int, *, readiness: Readiness) -> None:
        self._host = host
        self._requested_port = port
        self._readiness = readiness
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        # No access log: Prometheus and health probes would write a line every few seconds.
        self._runner = web.AppRunner(app, access_log=None)
        self._bound_port: int | None = None

    @property
    def port(self) -> int:
        """The port actually bound (differs from the requested one when that was 0)."""
        if self._bound_port is None:
            raise RuntimeError("HealthServer is not started")
        return self._bound_port

    async def start(self) -> None:
        """Bind and start serving; raises OSError when the address is taken."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._requested_port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        self._bound_port = self._runner.addresses[0][1]
        log.info("Health and metrics server listening on %s:%d", self._host, self._bound_port)

    async def stop(self) -> None:
        """Stop serving and release the port."""
        await self._runner.cleanup()
        self._bound_port = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, _request: web.Request) -> web.Response:
        try:
            checks = await self._readiness()
        except Exception:
            # A check that cannot even run means "not ready", not a 500 with a traceback.
            log.exception("Readiness check failed")
            checks = {"readiness_check": False}
        return web.json_response(checks, status=200 if all(checks.values()) else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})
