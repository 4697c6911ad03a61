"""Deployments: pipelines served as endpoints or run on a schedule, elastic or low-latency."""
