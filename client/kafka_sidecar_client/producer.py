"""``Producer``: a drop-in ``confluent_kafka.Producer`` that uses the pod's sidecar when told to.

``KAFKA_SIDECAR_MODE=sidecar`` switches it on; anything else is plain confluent-kafka, with the
confluent producer's own bound methods, so direct mode adds no per-call cost.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Producer as KafkaProducer

from kafka_sidecar_client import forking
from kafka_sidecar_client.config import ClientSettings
from kafka_sidecar_client.events import DeliveryCallback
from kafka_sidecar_client.sidecar_mode import SidecarMode

log = logging.getLogger(__name__)

# Why a Producer stayed direct although the environment asked for the sidecar, and how often.
DIRECT_REASONS: dict[str, int] = {}
_SILENT = logging.getLogger("kafka_sidecar_client.config_check")
_SILENT.disabled = True


class Producer:
    """Same constructor and methods as ``confluent_kafka.Producer``.

    In sidecar mode ``produce()`` only enqueues; delivery callbacks run inside ``poll()`` and
    ``flush()`` with ``(err, msg)`` as confluent-kafka passes them. Methods that do not produce
    (``list_topics``, transactions, ``set_sasl_credentials``, ...) go to a direct producer,
    created on first use.
    """

    def __init__(self, config: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        conf = {**(config or {}), **kwargs}
        self._config = conf
        self._settings = ClientSettings.from_env(os.environ)
        self._direct: KafkaProducer | None = None
        self._sidecar: SidecarMode | None = None
        self.mode = self._settings.mode
        if self.mode == "sidecar" and conf.get("transactional.id"):
            self._stay_direct("transactional.id is set: a transaction belongs to one producer")
        if self.mode == "direct":
            self._use_direct(KafkaProducer(conf))
        else:
            _validate(conf)
            self._use_sidecar()
        forking.track(self)

    # -- binding the mode's methods onto the instance (no per-call dispatch) --------------------

    def _use_direct(self, producer: KafkaProducer) -> None:
        self._direct = producer
        self.produce = producer.produce  # type: ignore[method-assign,assignment]
        self.poll = producer.poll  # type: ignore[method-assign,assignment]
        self.flush = producer.flush  # type: ignore[method-assign,assignment]
        self.purge = producer.purge  # type: ignore[method-assign]

    def _use_sidecar(self) -> None:
        callback = self._config.get("on_delivery")
        self._sidecar = mode = SidecarMode(self._config, self._settings, callback)
        self.produce = mode.produce  # type: ignore[method-assign]
        self.poll = mode.poll  # type: ignore[method-assign]
        self.flush = mode.flush  # type: ignore[method-assign]
        self.purge = mode.purge  # type: ignore[method-assign]

    def _stay_direct(self, reason: str) -> None:
        if reason not in DIRECT_REASONS:
            log.warning(
                "Producer stays in direct mode although KAFKA_SIDECAR_MODE=sidecar: %s", reason
            )
        DIRECT_REASONS[reason] = DIRECT_REASONS.get(reason, 0) + 1
        self.mode = "direct"

    def before_fork(self) -> None:
        if self._sidecar is not None:
            self._sidecar.quiesce()

    def after_fork_in_parent(self) -> None:
        if self._sidecar is not None:
            self._sidecar.resume()

    def after_fork_in_child(self) -> None:
        """Fresh per-process state: the parent's threads, channel and librdkafka do not survive."""
        if self._sidecar is not None:
            forking.abandon(self._sidecar)
            self._use_sidecar()
        elif self._direct is not None:
            forking.abandon(self._direct)
            self._use_direct(KafkaProducer(self._config))

    # -- confluent_kafka.Producer's producing API ---------------------------------------------

    def produce(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int = -1,
        on_delivery: DeliveryCallback | None = None,
        callback: DeliveryCallback | None = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None:
        """Enqueue one event; its callback runs in a later ``poll()``/``flush()``."""
        raise NotImplementedError  # replaced per instance

    def poll(self, timeout: float | None = None) -> int:  # replaced per instance
        raise NotImplementedError

    def flush(self, timeout: float | None = None) -> int:  # replaced per instance
        raise NotImplementedError

    def purge(
        self,
        in_queue: bool = True,
        in_flight: bool = True,  # replaced per instance
        blocking: bool = True,
    ) -> None:
        raise NotImplementedError

    def emission_counters(self) -> dict[str, dict[str, int]]:
        """Sidecar mode: this process's totals per topic (attempts, acked, failed, fallback,
        resent), the figures it also reports to the sidecar. Empty in direct mode."""
        return self._sidecar.counter_totals() if self._sidecar is not None else {}

    def __len__(self) -> int:
        if self._sidecar is not None:
            return len(self._sidecar)
        assert self._direct is not None
        return len(self._direct)

    def __getattr__(self, name: str) -> Any:
        """Everything else (list_topics, transactions, ...) is the direct producer's."""
        if name.startswith("_"):
            raise AttributeError(name)
        if self._direct is None:
            assert self._sidecar is not None
            self._direct = self._sidecar.fallback.producer
        return getattr(self._direct, name)


def _validate(config: Mapping[str, Any]) -> None:
    """Check the confluent config the way a direct producer would, without any connection.

    Sidecar mode may never build its direct producer; a typo must still fail at construction.
    """
    probe = {
        k: v for k, v in config.items() if k not in ("bootstrap.servers", "metadata.broker.list")
    }
    probe["logger"] = _SILENT  # it has no brokers on purpose: drop its warning about that
    KafkaProducer(probe)
