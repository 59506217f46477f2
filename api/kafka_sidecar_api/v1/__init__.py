"""Generated from protos/kafka_sidecar_api/v1/sidecar.proto by `make proto`; do not edit."""
