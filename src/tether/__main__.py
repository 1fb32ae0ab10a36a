"""``python -m tether``: the CLI."""

from tether.cli.main import main

main()
