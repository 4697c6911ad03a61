"""Executors: one interface, two backends (local processes, Kubernetes pods)."""
