"""The room relay (docs/architecture.md, "Components"): parties meet in rooms and exchange
end-to-end encrypted envelopes over gRPC bidirectional streams.

Modules: ``rooms`` (room model and rules), ``errors`` (errors and the status
table), ``backend`` (storage contract), ``memory`` / ``redis_backend`` (the
two backends), ``service`` (gRPC servicer and server factory), ``client``
(asyncio client), ``main`` (the ``shardkeep-relay`` command).
"""
