"""``/healthz`` and ``/readyz`` on the health port.

Ready means the webhook answers from every policy: the replica's own policy view has been listed
in full. A TCP check on the webhook port would pass before that, and a Service would send it pods
that then get ``no-policy``.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web


async def serve_health(port: int, ready: Callable[[], bool]) -> web.AppRunner:
    """Start the server; the caller cleans the returned runner up on exit."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="policies not listed yet\n")

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 - the kubelet probes it
    return runner
