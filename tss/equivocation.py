"""Signed statements, echoed back: evidence of who equivocated.

With no coordinator trusted to hand everyone the same message, every party
sends its contribution point to point and builds its own view. A party that
shows different contributions to different peers gives the honest parties
different views, and each then finds the *other* honest parties' later
messages wrong (they were made for another view). Blaming on those would name
honest parties. So each such contribution is a **statement** the sender signs
with its ChillDKG host key (BIP-340, the message prefixed as CertEq's in the
ChillDKG draft BIP: a 33-byte zero-padded prefix, the signer's index, a
context hash binding the session, then the value), and the next round
**echoes** every statement the party used (its view). Comparing each echoed
view with one's own (``Statements.judge_views``) before judging anything that
depends on the views:

- the same value: nothing to judge (a differing signature on it is harmless);
- another value whose signature verifies: its signer signed two values for one
  session, an equivocation proven by two signatures anyone can check;
- another value whose signature does not verify: the echoing party made it up
  in a message it sealed itself.

The echo is the signed statements themselves rather than a hash of them: a
hash would show *that* views differ but not *who* made them differ without
another round.

A statement is evidence only within one session: the context must bind a
session id that is never reused (the service derives it from the room and the
fresh ceremony id).

Users: FROST round-1 nonces (``tss.signing.Bip340Signing``) and keygen's
round-1 messages (``tss.keygen.Keygen``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from tss.curve import schnorr_sign, schnorr_verify
from tss.errors import FaultyParticipantError, InputError, ProtocolError

__all__ = ["SIGNATURE_BYTES", "SignedStatement", "Statements", "EquivocationError"]

SIGNATURE_BYTES: Final = 64


class SignedStatement(NamedTuple):
    """A party's value (a nonce, a message hash) with its host-key signature."""

    value: bytes
    signature: bytes

    def to_bytes(self) -> bytes:
        return self.value + self.signature


class EquivocationError(ProtocolError):
    """Parties' views differ; the evidence names who made them differ.

    Attributes:
        equivocators: party -> two validly signed, different statements of this
            session (the one we hold, the one an echo showed).
        forgers: parties that echoed a statement whose signature does not verify.
    """

    def __init__(
        self,
        what: str,
        equivocators: Mapping[int, tuple[SignedStatement, SignedStatement]],
        forgers: Sequence[int],
    ) -> None:
        self.equivocators = dict(equivocators)
        self.forgers = tuple(sorted(set(forgers)))
        parts = []
        if self.equivocators:
            parts.append(f"signed two: {sorted(self.equivocators)}")
        if self.forgers:
            parts.append(f"echoed a signature that does not verify: {list(self.forgers)}")
        super().__init__(
            f"parties' views of the {what} differ ({'; '.join(parts)})",
            [*self.equivocators, *self.forgers],
        )


@dataclass(frozen=True)
class Statements:
    """One kind of statement: its signing prefix, its value's length and its name."""

    prefix: bytes
    value_bytes: int
    what: str

    @property
    def signed_bytes(self) -> int:
        return self.value_bytes + SIGNATURE_BYTES

    def _message(self, context: bytes, signer: int, value: bytes) -> bytes:
        return self.prefix.ljust(33, b"\x00") + signer.to_bytes(4, "big") + context + value

    def sign(
        self, hostseckey: bytes, context: bytes, signer: int, value: bytes, aux_rand: bytes
    ) -> SignedStatement:
        """``signer``'s statement of ``value`` in the session ``context`` binds."""
        if len(value) != self.value_bytes or len(context) != 32:
            raise InputError(f"a {self.what} is {self.value_bytes} bytes, a context 32")
        message = self._message(context, signer, value)
        return SignedStatement(value, schnorr_sign(message, hostseckey, aux_rand))

    def valid(
        self, hostpubkey: bytes, context: bytes, signer: int, statement: SignedStatement
    ) -> bool:
        """Whether ``statement`` is signed by ``signer``'s host key for ``context``."""
        # The x-only key suffices: the message names the signer's index (as CertEq).
        message = self._message(context, signer, statement.value)
        return schnorr_verify(message, hostpubkey[1:33], statement.signature)

    def parse(self, data: bytes, sender: int) -> SignedStatement:
        """Decode one signed statement ``sender`` sealed; a wrong length blames it."""
        if len(data) != self.signed_bytes:
            raise FaultyParticipantError(sender, f"not a signed {self.what}")
        return SignedStatement(data[: self.value_bytes], data[self.value_bytes :])

    @staticmethod
    def encode_view(view: Sequence[SignedStatement]) -> bytes:
        """Every party's signed statement, in party order."""
        return b"".join(s.to_bytes() for s in view)

    def parse_view(self, data: bytes, count: int, sender: int) -> list[SignedStatement]:
        """Decode ``sender``'s echoed view of ``count`` statements (a wrong length blames it)."""
        step = self.signed_bytes
        if len(data) != count * step:
            raise FaultyParticipantError(sender, f"echoed {self.what}s have the wrong length")
        return [self.parse(data[k : k + step], sender) for k in range(0, len(data), step)]

    def judge_views(
        self,
        context: bytes,
        parties: Sequence[int],
        hostpubkeys: Sequence[bytes],
        mine: Sequence[SignedStatement],
        views: Mapping[int, Sequence[SignedStatement]],
    ) -> None:
        """Check that every echoed view holds our values; else name who made them differ.

        Arguments:
            context: the session's context hash.
            parties: the parties, in the order of every view.
            hostpubkeys: every party's 33-byte host public key, by party id.
            mine: our view (each signature already verified when it arrived).
            views: party -> the view it echoed.

        Raises:
            EquivocationError: a view holds another value than ours for some party;
                names that party when its signature on the other value verifies,
                else the party that echoed it.
        """
        equivocators: dict[int, tuple[SignedStatement, SignedStatement]] = {}
        forgers: list[int] = []
        for echoer, view in views.items():
            for position, party in enumerate(parties):
                theirs, ours = view[position], mine[position]
                if theirs.value == ours.value:
                    continue
                if self.valid(hostpubkeys[party], context, party, theirs):
                    equivocators.setdefault(party, (ours, theirs))
                else:
                    forgers.append(echoer)
        if equivocators or forgers:
            raise EquivocationError(self.what, equivocators, forgers)

    def verify_all(
        self,
        context: bytes,
        hostpubkeys: Sequence[bytes],
        statements: Mapping[int, SignedStatement],
    ) -> None:
        """Verify the statements that arrived, blaming every sender of an unsigned one.

        Raises:
            FaultyParticipantError / ProtocolError: every sender whose statement's
                signature does not verify (each sealed its own message).
        """
        bad = [
            sender
            for sender, statement in statements.items()
            if not self.valid(hostpubkeys[sender], context, sender, statement)
        ]
        if len(bad) == 1:
            raise FaultyParticipantError(bad[0], f"{self.what} not signed by its host key")
        if bad:
            raise ProtocolError(f"{self.what}s not signed by their host keys", bad)
