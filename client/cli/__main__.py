"""``python -m client.cli``: the ``shardkeep`` command line."""

from client.cli.entry import main

raise SystemExit(main())
