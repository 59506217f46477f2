"""Reading injected sidecars' /metrics for the fallback alert and the connections saved, as if
each endpoint were hostile.

Whatever listens on a pod's IP is its author's to choose: so the body is bounded after
decompression (a small gzip response can expand a thousandfold), each request has a deadline for
the whole exchange (a slow drip cannot hold it), and only so many requests run at once.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass

import aiohttp

from kafka_sidecar_operator.conditions import PodView
from kafka_sidecar_operator.connections import sidecar_gauges
from kafka_sidecar_operator.fallback import PodSample, client_totals
from kafka_sidecar_operator.metrics import FALLBACK_SCRAPES

MAX_BODY_BYTES = 1 << 20  # a sidecar's /metrics is a few KiB
CONCURRENCY = 16
DEADLINE_SECONDS = 2.0
CHUNK_BYTES = 16 << 10


class BodyRefused(ValueError):
    """The body is larger than allowed, or in an encoding we do not read."""


class BoundedBody:
    """Collects a response body, decompressing as it arrives, never holding more than ``limit``
    bytes of output (nor of input)."""

    def __init__(self, encoding: str, limit: int = MAX_BODY_BYTES) -> None:
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            self._inflater = None
        elif encoding in ("gzip", "x-gzip"):
            self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._inflater = zlib.decompressobj()
        else:
            raise BodyRefused(f"content encoding {encoding!r} is not read")
        self.limit = limit
        self._received = 0
        self._body = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if self._received > self.limit:
            raise BodyRefused(f"body larger than {self.limit} bytes")
        if self._inflater is None:
            self._body += chunk
            return
        data = chunk
        while data:
            try:
                out = self._inflater.decompress(data, self.limit - len(self._body) + 1)
            except zlib.error as error:
                raise BodyRefused(f"body does not decompress: {error}") from None
            self._body += out
            if len(self._body) > self.limit:
                raise BodyRefused(f"body larger than {self.limit} bytes once decompressed")
            data = self._inflater.unconsumed_tail

    def text(self) -> str:
        return self._body.decode("utf-8", errors="replace")


@dataclass
class Scraper:
    """Scrapes with at most ``concurrency`` requests in flight across every policy."""

    concurrency: int = CONCURRENCY
    deadline: float = DEADLINE_SECONDS
    limit: int = MAX_BODY_BYTES

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.concurrency)

    async def scrape_all(self, pods: list[PodView]) -> list[PodSample]:
        """Samples of the pods that answered or are known unreachable; failed scrapes left out."""
        if not pods:
            return []
        async with aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=self.deadline),
            connector=aiohttp.TCPConnector(limit=self.concurrency, force_close=True),
        ) as session:
            found = await asyncio.gather(*(self.scrape(session, pod) for pod in pods))
        return [sample for sample in found if sample is not None]

    async def scrape(self, session: aiohttp.ClientSession, pod: PodView) -> PodSample | None:
        """A pod's client counters and connection gauges; unreachable if its sidecar is not ready.

        A ready sidecar whose scrape fails is left out (None): one bad answer is not a fallback.
        """
        if not pod.sidecar_ready or not pod.ip or not pod.metrics_port:
            FALLBACK_SCRAPES.labels("unreachable").inc()
            return PodSample(pod.name, reachable=False)
        try:
            async with self._slots, asyncio.timeout(self.deadline):
                text = await self._fetch(session, f"http://{pod.ip}:{pod.metrics_port}/metrics")
            attempts, fallback = client_totals(text)
        except (aiohttp.ClientError, TimeoutError, BodyRefused, ValueError):
            FALLBACK_SCRAPES.labels("failed").inc()
            return None
        FALLBACK_SCRAPES.labels("ok").inc()
        try:
            clients, connections = sidecar_gauges(text)
        except ValueError:
            # A bad connection gauge costs the pod its place in the connection figures, never
            # its fallback counters: the alert keeps seeing it.
            clients, connections = 0, 0
        return PodSample(
            pod.name, attempts, fallback, clients=clients, broker_connections=connections
        )

    async def _fetch(self, session: aiohttp.ClientSession, url: str) -> str:
        async with session.get(
            url, headers={"Accept-Encoding": "identity"}, allow_redirects=False
        ) as response:
            if response.status != 200:
                raise BodyRefused(f"HTTP {response.status}")
            body = BoundedBody(response.headers.get("Content-Encoding", ""), self.limit)
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                body.feed(chunk)
            return body.text()
