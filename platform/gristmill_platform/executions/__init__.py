"""Executions: runs of pipelines, their inputs, outputs, logs and outcome."""
