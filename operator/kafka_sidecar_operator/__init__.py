"""The kopf operator: injects the producer sidecar and reconciles KafkaSidecarPolicy."""
