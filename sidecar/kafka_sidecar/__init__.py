"""The producer sidecar: one confluent-kafka producer per pod, served over gRPC."""
