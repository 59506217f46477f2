"""``kafka-sidecar-operator run [--local]``: kopf with our handlers, webhook server and metrics.

``--local`` serves the webhook on 127.0.0.1 with a CA and certificate made at start, registers
the MutatingWebhookConfiguration itself and removes it on exit — for the local environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import socket
import sys

import kopf
from prometheus_client import start_http_server

from kafka_sidecar_operator.config import OperatorConfig, OperatorConfigError
from kafka_sidecar_operator.handlers import pods  # noqa: F401 - registers the handlers
from kafka_sidecar_operator.handlers.lifecycle import RunOptions
from kafka_sidecar_operator.metrics import REGISTRY

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

    options = RunOptions(
        local=args.local,
        identity=config.peering_identity(socket.gethostname(), os.getpid()),
        priority=random.randint(1, 1_000_000),  # noqa: S311 - distinct, not secret
    )
    kopf.run(
        clusterwide=not config.watch_namespaces,
        namespaces=config.watch_namespaces,
        standalone=not config.peering,
        peering_name=config.peering or None,
        priority=options.priority,
        # kopf's Identity is a NewType of str it does not export.
        identity=options.identity,  # type: ignore[arg-type]
        memo=kopf.Memo(config=config, options=options),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
