"""Transaction parsers shared by the enclave (policy checks, digests) and the client.

One module per chain: ``evm`` (legacy EIP-155 and EIP-1559 transactions),
``solana`` (legacy and v0 messages). Each parser takes the exact bytes to be
signed, refuses anything it cannot read completely with a
:class:`~shardkeep.chains.errors.TransactionParseError`, and computes what is
signed from those bytes itself. This package imports no other project package
but ``tss.errors``.
"""
