"""Faults under load on the real node: brokers, sidecars, networks and control planes die while a
fleet produces, and nothing may be lost. ``make chaos`` runs it; ``tests/chaos`` runs it short."""
