"""``/healthz`` and ``/readyz`` on the health port.

Ready means the webhook answers from every policy: the webhook process's policy view has been
listed in full, and its server accepts connections. A TCP check on the webhook port alone would
pass before the view is complete (pods would get ``no-policy``); the view alone may be complete
before the server listens (the API server would fail open on the refused connection).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiohttp import web


async def accepting(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` (a TCP connect within a second)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=1)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def serve_health(
    port: int, ready: Callable[[], bool], webhook: tuple[str, int] | None = None
) -> web.AppRunner:
    """Start the server; the caller cleans the returned runner up on exit. ``webhook`` is the
    address the webhook server listens on, checked by ``/readyz``."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if not ready():
            return web.Response(status=503, text="policies not listed yet\n")
        if webhook is not None and not await accepting(*webhook):
            return web.Response(status=503, text="webhook server not listening yet\n")
        return web.Response(text="ready\n")

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 - the kubelet probes it
    return runner
