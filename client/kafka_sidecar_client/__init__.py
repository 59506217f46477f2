"""Drop-in ``confluent_kafka.Producer`` that sends through the pod's sidecar when enabled.

``from kafka_sidecar_client import Producer`` and set ``KAFKA_SIDECAR_MODE=sidecar``.
"""

from kafka_sidecar_client.config import ClientConfigError, ClientSettings
from kafka_sidecar_client.delivery import DeliveredMessage
from kafka_sidecar_client.producer import Producer

__all__ = ["ClientConfigError", "ClientSettings", "DeliveredMessage", "Producer"]
