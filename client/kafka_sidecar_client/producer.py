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
from kafka_sidecar_client.batch import produce_batch
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

    # Bound per instance to the mode's own methods, so a call costs no dispatch; a subclass
    # that overrides one keeps its override (and reaches ours through super()).
    _FAST_PATH = ("produce", "poll", "flush", "purge")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > 1:
            raise TypeError("expected tuple containing single dict")
        if args and not isinstance(args[0], dict):
            raise TypeError("expected configuration dict")
        if not args and not kwargs:
            raise TypeError("expected configuration dict")
        conf = {**(args[0] if args else {}), **kwargs}
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

    def _bind(self, implementation: Any) -> None:
        for name in self._FAST_PATH:
            if getattr(type(self), name) is getattr(Producer, name):
                setattr(self, name, getattr(implementation, name))

    def _use_direct(self, producer: KafkaProducer) -> None:
        self._direct = producer
        self._bind(producer)

    def _use_sidecar(self) -> None:
        callback = self._config.get("on_delivery")
        self._sidecar = mode = SidecarMode(self._config, self._settings, callback)
        self._bind(mode)

    def _mode(self) -> Any:
        """The object doing the work: the sidecar machinery or the direct producer."""
        return self._sidecar if self._sidecar is not None else self._direct

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
        """Fresh per-process state: the parent's threads, channel and librdkafka do not survive.

        That includes the direct producer sidecar mode delegates to (``list_topics``,
        transactions, ...): the child makes its own on first use.
        """
        if self._sidecar is not None:
            self._sidecar.release_in_child()
            forking.abandon(self._sidecar)
            if self._direct is not None:
                forking.abandon(self._direct)
                self._direct = None
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
        self._mode().produce(
            topic,
            value,
            key,
            partition=partition,
            on_delivery=on_delivery,
            callback=callback,
            timestamp=timestamp,
            headers=headers,
        )

    def poll(self, timeout: float | None = None) -> int:
        """Run the callbacks of delivered events, waiting up to ``timeout`` for one."""
        if timeout is None:
            return int(self._mode().poll())
        return int(self._mode().poll(timeout))

    def flush(self, timeout: float | None = None) -> int:
        """Wait for every event's callback; returns how many are still outstanding."""
        if timeout is None:
            return int(self._mode().flush())
        return int(self._mode().flush(timeout))

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        """Drop outstanding events; their callbacks report _PURGE_QUEUE / _PURGE_INFLIGHT."""
        self._mode().purge(in_queue, in_flight, blocking)

    def produce_batch(
        self,
        topic: str,
        messages: list[dict[str, Any]],
        partition: int = -1,
        on_delivery: DeliveryCallback | None = None,
    ) -> int:
        """confluent's ``produce_batch``; in sidecar mode each message goes through ``produce``."""
        if self._sidecar is None:
            assert self._direct is not None
            if on_delivery is None:
                return int(self._direct.produce_batch(topic, messages, partition=partition))
            return int(
                self._direct.produce_batch(
                    topic, messages, partition=partition, on_delivery=on_delivery
                )
            )
        return produce_batch(self.produce, topic, messages, partition, on_delivery)

    def close(self) -> bool:
        """Flush, then release the producer; later calls raise ``RuntimeError`` as confluent's."""
        return bool(self._mode().close())

    def emission_counters(self) -> dict[str, dict[str, int]]:
        """Sidecar mode: this process's totals per topic (attempts, acked, failed, fallback,
        resent), the figures it also reports to the sidecar. Empty in direct mode."""
        return self._sidecar.counter_totals() if self._sidecar is not None else {}

    def __len__(self) -> int:
        return len(self._mode())

    def __bool__(self) -> bool:
        """True, as confluent's (which has no ``__len__``-based truth): ``if producer:`` holds
        also while nothing is queued."""
        return True

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """As confluent's: flush and close."""
        self.close()

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
