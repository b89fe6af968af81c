"""``python -m bench`` runs the whole benchmark (``--help`` for options)."""

from bench.run import main

raise SystemExit(main())
