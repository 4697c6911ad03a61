"""Pulumi program: one Gristmill environment per stack (docs/environments-on-aws.md).

Reads and validates the stack's configuration, builds the components, exports the outputs.
"""

import pulumi

from gristmill_infra.config import load_config
from gristmill_infra.stack import build_environment

outputs = build_environment(load_config())
for output_name, value in outputs.as_dict().items():
    pulumi.export(output_name, value)
