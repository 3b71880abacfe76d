"""shardkeep relay package."""
