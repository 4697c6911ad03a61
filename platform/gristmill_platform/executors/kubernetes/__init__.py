"""The Kubernetes backend: pure manifest builders and status mapping, one thin kr8s executor.

``manifests`` and ``status`` never touch a cluster; ``executor`` is the only module with
side effects (and the only one importing kr8s).
"""
