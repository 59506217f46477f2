"""Drop-in ``confluent_kafka.Producer`` that sends through the pod's producer sidecar when enabled."""
