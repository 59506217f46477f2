"""``kafka-sidecar-operator run [--local]``: kopf with our handlers, webhook server and metrics.

``--local`` serves the webhook on 127.0.0.1 with a CA and certificate made at start, registers
the MutatingWebhookConfiguration itself and removes it on exit — for the local environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from prometheus_client import start_http_server

from kafka_sidecar_operator import handlers, tls  # noqa: F401 - registers the handlers
from kafka_sidecar_operator.config import OperatorConfig, OperatorConfigError
from kafka_sidecar_operator.handlers import pods, policies  # noqa: F401
from kafka_sidecar_operator.metrics import REGISTRY
from kafka_sidecar_operator.webhook import (
    local_certificates,
    url_client_config,
    webhook_configuration,
)

log = logging.getLogger("kafka_sidecar_operator")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
                "level": record.levelname,
                "logger": record.name,
                "msg": record.getMessage(),
            }
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kafka-sidecar-operator")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator (configured by KAFKA_SIDECAR_OPERATOR_*)")
    run.add_argument(
        "--local",
        action="store_true",
        help="serve the webhook on 127.0.0.1 with generated TLS and register it",
    )
    run.add_argument("--log-format", choices=["text", "json"], default="text")
    args = parser.parse_args(argv)
    try:
        config = OperatorConfig.from_env(os.environ)
    except OperatorConfigError as error:
        print(f"kafka-sidecar-operator: configuration error: {error}", file=sys.stderr)
        return 2
    handler = logging.StreamHandler()
    if args.log_format == "json":
        handler.setFormatter(JsonFormatter())
    logging.basicConfig(
        level=logging.INFO,
        handlers=[handler],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kopf logs every timer run at INFO: keep its per-object chatter out of the log.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if config.metrics_port:
        start_http_server(config.metrics_port, registry=REGISTRY)

    @kopf.on.startup()
    async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.posting.level = logging.WARNING  # our own Normal Events are posted explicitly
        settings.admission.managed = None
        if args.local:
            directory = Path(tempfile.mkdtemp(prefix="kafka-sidecar-webhook-"))
            serving, ca_bundle = local_certificates(directory)
            host = "127.0.0.1"
            settings.admission.server = kopf.WebhookServer(
                addr=host,
                host=host,
                port=config.webhook_port,
                certfile=str(serving.cert),
                pkeyfile=str(serving.key),
                cafile=str(directory / "kafka-sidecar-webhook-ca.crt"),
            )
            register(config, url_client_config(host, config.webhook_port, ca_bundle))
            memo.registered = True
        else:
            if config.tls == "self-managed":
                tls.ensure(_api(), config.namespace, config.cert_dir, config.webhook_name)
                memo.renewer = asyncio.create_task(renew_forever(config))
            settings.admission.server = kopf.WebhookServer(
                addr=config.webhook_host,
                port=config.webhook_port,
                certfile=str(config.cert_dir / "tls.crt"),
                pkeyfile=str(config.cert_dir / "tls.key"),
            )
        memo.config = config
        memo.api = _api()

    @kopf.on.cleanup()
    def unregister(memo: kopf.Memo, **_: Any) -> None:
        if memo.get("registered"):
            admission = k8s.AdmissionregistrationV1Api(_api())
            try:
                admission.delete_mutating_webhook_configuration(config.webhook_name)
            except ApiException as error:
                if error.status != 404:
                    raise
            log.info("Removed MutatingWebhookConfiguration %s", config.webhook_name)

    kopf.run(
        clusterwide=not config.watch_namespaces,
        namespaces=config.watch_namespaces,
        standalone=not config.peering or args.local,
        peering_name=config.peering or None,
        priority=random.randint(1, 1_000_000),  # noqa: S311 - distinct, not secret
        # kopf's Identity is a NewType of str it does not export.
        identity=config.peering_identity(socket.gethostname(), os.getpid()),  # type: ignore[arg-type]
        memo=kopf.Memo(config=config),
        liveness_endpoint=f"http://0.0.0.0:{config.health_port}/healthz"
        if config.health_port
        else None,
    )
    return 0


async def renew_forever(config: OperatorConfig) -> None:
    """Self-managed TLS: check hourly; renewal happens with a third of the lifetime left."""
    while True:
        await asyncio.sleep(3600)
        try:
            await asyncio.to_thread(
                tls.ensure, _api(), config.namespace, config.cert_dir, config.webhook_name
            )
        except Exception:
            log.exception("Could not renew the webhook certificate; retrying in an hour")


def _api() -> k8s.ApiClient:
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    return k8s.ApiClient()


def register(config: OperatorConfig, client_config: dict[str, Any]) -> None:
    """Create or replace our MutatingWebhookConfiguration (--local only)."""
    # The client accepts plain dicts; its stubs want models.
    body: Any = webhook_configuration(config.webhook_name, client_config, config.never_injected)
    admission = k8s.AdmissionregistrationV1Api(_api())
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


if __name__ == "__main__":
    sys.exit(main())
