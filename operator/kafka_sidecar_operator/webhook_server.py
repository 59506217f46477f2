"""The webhook's HTTPS server, on a thread and event loop of its own.

kopf's event loop handles every pod's watch events and the policy status; an admission request
waiting there waits for all of that (hundreds of milliseconds with 10,000 pods). This server
answers on its own loop, from a thread, with whatever ``answer`` the caller gives it.

TLS: the certificate files are checked every ``check_seconds`` and, when they changed and load,
served to every new connection from then on, without closing the listening socket (a
``sni_callback`` hands each handshake the newest context; connections open keep theirs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from kafka_sidecar_operator.webhook import InvalidReview

log = logging.getLogger(__name__)
Answer = Callable[[str, dict[str, Any]], dict[str, Any]]
CHECK_SECONDS = 10.0
SHUTDOWN_SECONDS = 5.0
DRAIN_SECONDS = 2.0
"""After a stop, answers carry ``Connection: close`` this long before the server closes: a client
holding an idle keep-alive connection (kube-apiserver does) learns it from an answer instead of
writing its next review into a socket closed under it, which fails open (a pod admitted without
its decision; seen in CI as ``write: broken pipe`` while a replica restarted)."""


class WebhookServer:
    """POST ``/<handler id>`` for each of ``handler_ids``, answered by ``answer(id, review)``."""

    def __init__(
        self,
        host: str,
        port: int,
        certfile: Path,
        keyfile: Path,
        answer: Answer,
        handler_ids: tuple[str, ...],
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self.host = host
        self.port = port
        self.certfile = certfile
        self.keyfile = keyfile
        self.answer = answer
        self.handler_ids = handler_ids
        self.check_seconds = check_seconds
        self._files = self._read_files()
        self._serving = self._context()
        self._listening = self._context()
        self._listening.sni_callback = self._choose
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._draining = False
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Listen (on a new thread); returns once connections are accepted, or raises why not."""
        self._thread = threading.Thread(target=self._run, name="webhook-server", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError(f"the webhook server did not listen within {timeout} s")
        if self._failure is not None:
            raise RuntimeError("the webhook server could not start") from self._failure
        log.info("Serving the webhook at https://%s:%d", self.host or "*", self.port)

    def stop(self, timeout: float = DRAIN_SECONDS + SHUTDOWN_SECONDS + 5) -> None:
        """Drain keep-alive connections, stop accepting, let answers in progress finish (up to a
        few seconds), end the thread."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def reload(self) -> bool:
        """Serve the certificate files to new connections if they changed and load; whether so."""
        files = self._read_files()
        if files == self._files:
            return False
        try:
            context = self._context()
        except (OSError, ssl.SSLError, ValueError) as error:
            # Half-written (a key not matching the certificate yet): the next check retries.
            log.warning("Not serving the changed webhook certificate files yet: %s", error)
            return False
        self._serving, self._files = context, files
        log.info("Serving the renewed webhook certificate")
        return True

    def _read_files(self) -> tuple[bytes, bytes]:
        return self.certfile.read_bytes(), self.keyfile.read_bytes()

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certfile, self.keyfile)
        return context

    def _choose(self, connection: ssl.SSLObject, _: str | None, __: ssl.SSLContext) -> None:
        """Called on every handshake (also without SNI): the newest certificate."""
        connection.context = self._serving

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except BaseException as error:  # reported to start(), or logged once running
            if not self._started.is_set():
                self._failure = error
            else:
                log.exception("The webhook server stopped")
        finally:
            self._started.set()
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.add_routes(
            [web.post(f"/{handler_id}", self._handle) for handler_id in self.handler_ids]
        )
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS
        )
        await runner.setup()
        try:
            site = web.TCPSite(
                runner,
                self.host or None,
                self.port,
                ssl_context=self._listening,
                reuse_address=True,
            )
            await site.start()
            self._started.set()
            while True:
                try:
                    await asyncio.wait_for(self._stopping.wait(), self.check_seconds)
                    self._draining = True
                    await asyncio.sleep(DRAIN_SECONDS)
                    return
                except TimeoutError:
                    pass
                try:
                    await asyncio.to_thread(self.reload)
                except OSError as error:
                    log.warning("Could not read the webhook certificate files: %s", error)
        finally:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        response = await self._respond(request)
        if self._draining:
            response.force_close()  # "Connection: close": the client opens its next one elsewhere
        return response

    async def _respond(self, request: web.Request) -> web.Response:
        handler_id = request.path.lstrip("/")
        try:
            review = json.loads(await request.read())
            return web.json_response(self.answer(handler_id, review))
        except (ValueError, InvalidReview) as error:  # JSONDecodeError is a ValueError
            return web.json_response({"error": str(error)}, status=400)
        except Exception:  # the API server admits the pod (failurePolicy Ignore)
            log.exception("Could not answer an admission review at %s", request.path)
            return web.json_response({"error": "internal error"}, status=500)
