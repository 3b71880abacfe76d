"""shardkeep enclave package."""
