"""The local environment: a real Kafka cluster and a real Kubernetes control plane on loopback.

Used by `make localenv-up`, the pytest fixtures and the demo; everything it runs is built from
package registries and cached under ``~/.cache/kafka-sidecar/`` (see ``versions.py``).
"""
