"""Pure, synchronous core of tether: journal comparison, replay, manifests, statuses, routing.

Nothing in this package performs I/O, reads the clock or imports asyncio; an import-linter
contract in ``pyproject.toml`` enforces it.
"""
