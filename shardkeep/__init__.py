"""Shared service plumbing (gRPC shell, logging) and the generated protobuf code (``shardkeep.v1``).

The protocol core ``tss`` never imports this package (docs/architecture.md, "Components").
"""
