"""The pool keys of a multi-step pipeline's node pools (executors/workers.py): a key of
the deployment's other workers, like a variant's, never confused with one."""

from __future__ import annotations

from gristmill_platform.executors.workers import node_key, node_step, split_key, variant_key


def test_a_node_pool_key_names_its_deployment_and_step() -> None:
    key = node_key("scores", "clean-step")
    assert key == "scores@#clean-step"
    assert split_key(key)[0] == "scores"  # stopping the deployment stops it
    assert node_step(key) == "clean-step"
    # a deployment's own key and a variant pipeline's are no node pools
    assert node_step("scores") is None
    assert node_step(variant_key("scores", "clean-step")) is None
