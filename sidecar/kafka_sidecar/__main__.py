"""``kafka-sidecar serve`` (also ``python -m kafka_sidecar serve``), configured by environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from kafka_sidecar.config import ConfigError, SidecarConfig
from kafka_sidecar.logs import configure
from kafka_sidecar.server import Sidecar
from kafka_sidecar.unix_socket import EXIT_SOCKET_UNUSABLE, SocketError, prepare

log = logging.getLogger("kafka_sidecar")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kafka-sidecar",
        description="The pod's Kafka producer sidecar. Configured by environment: "
        "KAFKA_SIDECAR_* and KAFKA_PRODUCER_<LIBRDKAFKA_PROPERTY>.",
    )
    parser.add_argument("command", choices=["serve"], help="serve: run the sidecar")
    parser.parse_args(argv)
    try:
        config = SidecarConfig.from_env(os.environ)
        configure(config.log_level, config.log_format)
        prepare(config.listen)  # before the producer starts connecting to the brokers
        sidecar = Sidecar(config)
        return asyncio.run(sidecar.run())
    except ConfigError as error:
        print(f"kafka-sidecar: configuration error: {error}", file=sys.stderr)
        return 2
    except SocketError as error:
        print(f"kafka-sidecar: {error}", file=sys.stderr)
        return EXIT_SOCKET_UNUSABLE


if __name__ == "__main__":
    sys.exit(main())
