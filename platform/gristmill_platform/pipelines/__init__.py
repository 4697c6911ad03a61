"""Pipelines: the unit users run and deploy (one step each for now)."""
