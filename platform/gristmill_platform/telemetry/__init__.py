"""The control service's own Prometheus metrics (docs/operations.md#metrics)."""
