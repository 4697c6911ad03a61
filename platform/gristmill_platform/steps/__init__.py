"""Steps: a Python function with typed inputs/outputs, its code and its environment."""
