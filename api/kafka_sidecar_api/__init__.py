"""The gRPC API of the producer sidecar (``kafka_sidecar.v1``): generated code and its stubs."""
