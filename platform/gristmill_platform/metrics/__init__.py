"""Metrics recorded from inside steps (contract §10.1-10.4)."""
