"""Test doubles that hold the real thing's rules, shared by ``tests/`` and ``bench/``.

A benchmark must not import the test suite (a checked layering rule, see
``[tool.importlinter]`` in pyproject.toml), yet the operator benchmark needs the same
Kubernetes API emulator the operator tests run against; it lives here, beside both. No
product code imports this package.
"""
