"""The one error a parser raises: the bytes are not a transaction it accepts."""

from __future__ import annotations

from tss.errors import InputError

__all__ = ["TransactionParseError"]


class TransactionParseError(InputError):
    """Bytes that are not a well-formed transaction of the named chain (the fault is named).

    Attributes:
        chain: ``"evm"``, ``"solana"`` or ``"rlp"``.
    """

    def __init__(self, chain: str, message: str) -> None:
        self.chain = chain
        super().__init__(f"{chain}: {message}")
