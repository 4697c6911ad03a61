"""Resource metrics of the environment (``GET /resource-metrics``) and per-execution
resource usage.

Two sources answer the same question: on one machine, ``sampled`` reads what ``sampler``
recorded of the host and of each worker process; in a cluster, ``prometheus`` asks
Prometheus (node exporter, cAdvisor, DCGM exporter). See docs/resource-metrics.md."""
