"""shardkeep's sans-IO threshold-signature core.

No sockets, asyncio, logging, clocks or OS randomness live here (docs/architecture.md):
every step takes its randomness as an argument. ``tss.local`` runs all parties
of a ceremony in one process.
"""
