"""``python -m client.cli``: the ``shardkeep`` command line."""

from client.cli.main import main

raise SystemExit(main())
