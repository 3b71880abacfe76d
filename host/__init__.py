"""shardkeep host package."""
