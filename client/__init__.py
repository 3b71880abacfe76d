"""shardkeep client package."""
