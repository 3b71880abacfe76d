"""Transaction parsers shared by the enclave (policy checks, digests) and the client.

One module per format: ``evm`` (legacy EIP-155 and EIP-1559 transactions),
``solana`` (legacy and v0 messages), ``eth_messages`` (EIP-191 personal
messages, EIP-712 typed data), ``psbt`` (BIP-174 PSBTs with BIP-371's Taproot
fields) over ``bitcoin_tx`` (transactions) and ``bip341`` (key-path
sighashes), and ``bech32`` (segwit addresses). Each parser takes the exact bytes to be
signed, refuses anything it cannot read completely with a
:class:`~shardkeep.chains.errors.TransactionParseError`, and computes what is
signed from those bytes itself (EIP-712 refuses with its ``TypedDataError``,
bech32 with ``AddressError``, both input errors). This package imports no
other project package but ``tss`` (errors, curve and tagged hashes).
"""
