"""The webhook server in a child process of its own.

The operator's process holds every pod kopf indexed and recomputes the policies' status each
second: its event loop, its interpreter lock and its garbage collections (pauses of a large heap)
would all delay admission answers. The child answers from its own policy view (its own list and
watch), with its own interpreter: nothing of that reaches it.

What crosses between the two: the child's log records (written by the parent's handlers), its
metric observations (counted in the parent's ``/metrics``), and three flags — listening, every
policy listed (readiness), stop. The child also stops when the parent is gone.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from logging.handlers import QueueHandler, QueueListener
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from kafka_sidecar_operator import metrics
from kafka_sidecar_operator.config import OperatorConfig
from kafka_sidecar_operator.handlers.admission import Admission
from kafka_sidecar_operator.policy_view import PolicyView
from kafka_sidecar_operator.watching import api_client, follow_policies
from kafka_sidecar_operator.webhook import HANDLER_ID, RECORD_HANDLER_ID
from kafka_sidecar_operator.webhook_server import WebhookServer

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2
PR_SET_PDEATHSIG = 1  # prctl(2)
START_SECONDS = 60.0
STOP_SECONDS = 15.0
# How long one thread runs before another waiting for the interpreter lock gets it (Python's
# default: 5 ms). The policy watch parses each status write the reconciler makes (one per policy
# and second while pods arrive): the webhook's thread must not wait 5 ms behind it.
SWITCH_INTERVAL_SECONDS = 0.0005


@dataclass(frozen=True)
class WebhookSpec:
    """What the child needs (pickled to it)."""

    config: OperatorConfig
    host: str
    certfile: Path
    keyfile: Path


@dataclass(frozen=True)
class _Channels:
    listening: Event
    ready: Event
    stop: Event
    observations: Queue[Any]
    logs: Queue[Any]


class WebhookProcess:
    """Starts, watches and stops the child; ``ready`` once it listens and has every policy."""

    def __init__(self, spec: WebhookSpec) -> None:
        self.spec = spec
        self._context = multiprocessing.get_context("spawn")
        self._channels: _Channels | None = None
        self._process: SpawnProcess | None = None
        self._logs: QueueListener | None = None
        self._counting: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self.alive and self._channels is not None and self._channels.ready.is_set()

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def launch(self) -> None:
        """Start the child (again, after it died). Call from the thread that lives as long as the
        process (the event loop's): the child is killed when that thread ends."""
        # Fresh channels each time: a child killed while writing may leave a queue locked.
        self._end_relays(wait=False)
        channels = self._channels = _Channels(
            listening=self._context.Event(),
            ready=self._context.Event(),
            stop=self._context.Event(),
            observations=self._context.Queue(),
            logs=self._context.Queue(),
        )
        self._logs = QueueListener(
            channels.logs, *logging.getLogger().handlers, respect_handler_level=True
        )
        self._logs.start()
        self._counting = threading.Thread(
            target=_count, args=(channels.observations,), name="webhook-metrics", daemon=True
        )
        self._counting.start()
        self._process = self._context.Process(
            target=serve,
            args=(self.spec, channels, os.getpid()),
            name="kafka-sidecar-webhook",
            daemon=True,
        )
        self._process.start()

    def wait_listening(self, timeout: float = START_SECONDS) -> None:
        """Block until the child listens; raise why not (it exited, or took too long)."""
        process, channels = self._process, self._channels
        assert process is not None, "launch() first"
        assert channels is not None
        deadline = time.monotonic() + timeout
        while not channels.listening.wait(POLL_SECONDS):
            if not process.is_alive():
                raise RuntimeError(f"the webhook process exited with code {process.exitcode}")
            if time.monotonic() > deadline:
                process.kill()
                raise TimeoutError(f"the webhook process did not listen within {timeout} s")
        log.info("The webhook process (pid %s) serves the webhook", process.pid)

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Let the child finish its answers in progress and exit; kill it if it does not."""
        if self._channels is not None:
            self._channels.stop.set()
        process = self._process
        if process is not None:
            process.join(timeout)
            if process.is_alive():
                log.warning("The webhook process did not stop within %.0f s; killing it", timeout)
                process.kill()
                process.join(5)
        self._end_relays(wait=True)

    def _end_relays(self, wait: bool) -> None:
        """End the threads relaying the current child's logs and metrics."""
        if self._channels is None or self._logs is None or self._counting is None:
            return
        self._channels.observations.put_nowait(None)
        if wait:
            self._logs.stop()
            self._counting.join(5)
        else:
            self._logs.enqueue_sentinel()
        self._logs = self._counting = None


def _count(observations: Queue[Any]) -> None:
    """Count the child's metric observations in this process's metrics."""
    while True:
        observation = observations.get()
        if observation is None:
            return
        metrics.apply(observation)


def serve(spec: WebhookSpec, channels: _Channels, parent_pid: int) -> None:
    """The child's main: serve until told to stop or the parent is gone."""
    _die_with(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop (Ctrl-C)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    root = logging.getLogger()
    root.handlers[:] = [QueueHandler(channels.logs)]
    root.setLevel(logging.INFO)
    metrics.forward_to(channels.observations.put_nowait)
    stop_watching = threading.Event()
    view = PolicyView(scopes=spec.config.watch_namespaces or ("",))
    follow_policies(api_client(), view, stop_watching)
    server = WebhookServer(
        spec.host,
        spec.config.webhook_port,
        spec.certfile,
        spec.keyfile,
        Admission(spec.config, view, api_client()).answer,
        handler_ids=(HANDLER_ID, RECORD_HANDLER_ID),
    )
    server.start()
    # What the imports made lives as long as the process: out of the collector's full passes
    # (tens of milliseconds over the Kubernetes client's modules, during an answer otherwise).
    gc.freeze()
    channels.listening.set()
    parent = multiprocessing.parent_process()
    try:
        while not channels.stop.wait(POLL_SECONDS):
            if view.complete:
                channels.ready.set()
            if parent is not None and not parent.is_alive():
                log.warning("The operator process is gone; the webhook process stops")
                break
    finally:
        server.stop()
        stop_watching.set()


def _die_with(parent_pid: int) -> None:
    """Be killed the moment the operator's process ends, however it ends (SIGKILL too): an
    operator that is down answers no webhook. Elsewhere than Linux, the poll in ``serve``."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # gone before that took effect
        os._exit(0)
