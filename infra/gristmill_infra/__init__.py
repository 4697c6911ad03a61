"""Gristmill environments on AWS, as Pulumi components.

`gristmill_infra.stack.build_environment` creates every component of one environment from a
validated `gristmill_infra.config.EnvironmentConfig`; `infra/__main__.py` calls it. Importing
this package creates nothing.
"""
