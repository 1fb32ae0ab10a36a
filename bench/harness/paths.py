"""Where things are."""

from __future__ import annotations

from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
PROJECT = BENCH.parent
PEERS = BENCH / ".peers"
PEER_PYTHON = PEERS / "venv/bin/python"
RESTATE_SERVER = PEERS / "node_modules/@restatedev/restate-server-linux-x64/bin/restate-server"
RESTATE_CLI = PEERS / "node_modules/@restatedev/restate-linux-x64/bin/restate"
TETHER_APP = BENCH / "apps/tether_app"
RESULTS = BENCH / "results"
