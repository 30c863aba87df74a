"""The core: numpy only. Layout metadata, messages, the server state machine, optimizers, rules.

Imports neither torch, distributed nor zarr (``tests/core/test_purity.py`` and the import-linter
contracts in ``pyproject.toml`` keep it so).
"""
