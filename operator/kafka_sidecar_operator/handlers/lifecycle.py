"""Operator start and stop: webhook server and TLS, the policy view, health, the status loop.

The webhook is served by a child process (``webhook_process``), apart from kopf's loop.

Registered with kopf on import. What ``main()`` decided (``--local``, identity, priority) reaches
here through the memo as a typed ``RunOptions``.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
from aiohttp import web
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kafka_sidecar_operator import tls
from kafka_sidecar_operator.conditions import PodView
from kafka_sidecar_operator.config import OperatorConfig
from kafka_sidecar_operator.handlers.policies import Reconciler
from kafka_sidecar_operator.handlers.webhook_process import WebhookProcess, WebhookSpec
from kafka_sidecar_operator.health import serve_health
from kafka_sidecar_operator.policy_view import PolicyView
from kafka_sidecar_operator.watching import api_client, follow_policies
from kafka_sidecar_operator.webhook import (
    local_certificates,
    url_client_config,
    webhook_configuration,
)

log = logging.getLogger(__name__)
RENEW_CHECK_SECONDS = 60  # also how soon a replica serves what another one renewed
SUPERVISE_SECONDS = 1.0


@dataclass(frozen=True)
class RunOptions:
    """How this process runs, decided once in ``main()``."""

    local: bool
    identity: str
    priority: int


@dataclass
class Running:
    """What startup made and cleanup stops."""

    stop: threading.Event = field(default_factory=threading.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    health: web.AppRunner | None = None
    webhook: WebhookProcess | None = None
    stopping: bool = False
    registered: bool = False
    pods_indexed: bool = False


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    # kopf's live pod index (handlers/pods.py), filled while kopf's watches run on this replica.
    pods_by_namespace: kopf.Index[str, PodView] = kwargs["pods_by_namespace"]
    config: OperatorConfig = memo.config
    options: RunOptions = memo.options
    running = memo.running = Running()
    settings.posting.level = logging.WARNING  # our own Normal Events are posted explicitly
    settings.admission.managed = None  # kopf serves no webhook: see webhook_process
    settings.admission.server = None
    api = memo.api = api_client()
    # The reconciler's view; the webhook process keeps its own.
    view = memo.view = PolicyView(scopes=config.watch_namespaces or ("",))
    follow_policies(api_client(), view, running.stop)
    if options.local:
        directory = Path(tempfile.mkdtemp(prefix="kafka-sidecar-webhook-"))
        serving, ca_bundle = local_certificates(directory)
        host, certfile, keyfile = "127.0.0.1", serving.cert, serving.key
    else:
        if config.tls == "self-managed":
            await asyncio.to_thread(
                tls.ensure, api, config.namespace, config.cert_dir, config.webhook_name
            )
            running.tasks.append(asyncio.create_task(renew_forever(config)))
        host = config.webhook_host
        certfile, keyfile = config.cert_dir / "tls.crt", config.cert_dir / "tls.key"
    webhook = running.webhook = WebhookProcess(WebhookSpec(config, host, certfile, keyfile))
    webhook.launch()  # from the loop's thread: the child lives no longer than this process
    try:
        await asyncio.to_thread(webhook.wait_listening)
    except Exception:
        await shut_down(memo)  # kopf retries the startup: leave no thread or process behind
        raise
    running.tasks.append(asyncio.create_task(supervise(webhook, running)))
    if options.local:
        register(api, config, url_client_config(host, config.webhook_port, ca_bundle))
        running.registered = True
    if config.health_port:
        # /readyz connects where the webhook server listens (any address: loopback).
        listening = "127.0.0.1" if options.local else config.webhook_host
        probe = "127.0.0.1" if listening in ("", "0.0.0.0", "::") else listening  # noqa: S104
        running.health = await serve_health(
            config.health_port, lambda: webhook.ready, webhook=(probe, config.webhook_port)
        )
    reconciler = Reconciler(
        config,
        api,
        view,
        pods_by_namespace,
        options.identity,
        options.priority,
        pods_indexed=lambda: running.pods_indexed,
    )
    running.tasks.append(asyncio.create_task(reconciler.run_forever()))


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await shut_down(memo)


async def shut_down(memo: kopf.Memo) -> None:
    """Stop what ``start`` started (also after a failed start)."""
    config: OperatorConfig = memo.config
    running: Running | None = memo.get("running")
    if running is None:
        return
    running.stop.set()
    running.stopping = True
    for task in running.tasks:
        task.cancel()
    await asyncio.gather(*running.tasks, return_exceptions=True)
    if running.webhook is not None:
        await asyncio.to_thread(running.webhook.stop)
    if running.health is not None:
        await running.health.cleanup()
    if running.registered:
        admission = k8s.AdmissionregistrationV1Api(memo.api)
        try:
            await asyncio.to_thread(
                admission.delete_mutating_webhook_configuration, config.webhook_name
            )
        except ApiException as error:
            if error.status != 404:
                raise
        log.info("Removed MutatingWebhookConfiguration %s", config.webhook_name)


async def renew_forever(config: OperatorConfig) -> None:
    """Self-managed TLS: read the shared Secret every minute, renew with a third of the lifetime
    left, and serve whatever another replica stored."""
    while True:
        await asyncio.sleep(RENEW_CHECK_SECONDS)
        try:
            await asyncio.to_thread(
                tls.ensure, api_client(), config.namespace, config.cert_dir, config.webhook_name
            )
        except Exception:
            log.exception("Could not check the webhook certificate; retrying in a minute")


async def supervise(webhook: WebhookProcess, running: Running) -> None:
    """Start the webhook process again whenever it exits unexpectedly (meanwhile /readyz fails:
    the API server's calls fail open)."""
    while not running.stopping:
        await asyncio.sleep(SUPERVISE_SECONDS)
        if not webhook.alive and not running.stopping:
            log.error("The webhook process exited; starting it again")
            try:
                webhook.launch()
                await asyncio.to_thread(webhook.wait_listening)
            except Exception:
                log.exception("Could not start the webhook process; retrying")


def register(api: k8s.ApiClient, config: OperatorConfig, client_config: dict[str, Any]) -> None:
    """Create or replace our MutatingWebhookConfiguration (--local only)."""
    # The client accepts plain dicts; its stubs want models.
    body: Any = webhook_configuration(config.webhook_name, client_config, config.never_injected)
    admission = k8s.AdmissionregistrationV1Api(api)
    try:
        admission.create_mutating_webhook_configuration(body)
    except ApiException as error:
        if error.status != 409:
            raise
        existing = admission.read_mutating_webhook_configuration(config.webhook_name)
        assert existing.metadata is not None
        body["metadata"]["resourceVersion"] = existing.metadata.resource_version
        admission.replace_mutating_webhook_configuration(config.webhook_name, body)
    log.info("Registered MutatingWebhookConfiguration %s", config.webhook_name)
