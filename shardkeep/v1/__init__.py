"""Generated protobuf and gRPC code for ``shardkeep.v1`` (``make protos``; do not edit)."""
