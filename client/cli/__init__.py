"""The ``shardkeep`` command line."""
