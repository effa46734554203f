"""``python -m topology``: the ``ponos-topology`` command line."""

from topology.cli import main

raise SystemExit(main())
