"""``python -m edgekv`` runs the CLI."""

from edgekv.cli import main

main()
