"""Drop-in ``confluent_kafka.Producer`` that sends through the pod's sidecar when enabled."""
