"""The blame matrix: every ceremony kind against every message a malicious party can send.

A cell is (ceremony kind, attacker, attack). The attacker is one party, or the
relay. Party attacks, for every round in which the party sends something to
the victim (the first honest party it sends to in that round):

- ``equivocate``: the party runs two honest instances of itself with their own
  randomness, one talking to the victim, one to everyone else, in every round;
- ``truncate`` / ``flip``: its round-r message to the victim loses its last
  byte / has its middle byte flipped (what it seals is its own word);
- ``withhold``: its round-r message to the victim is never sent.

Relay attacks (no party misbehaves), for every round and every claimed sender:

- ``relay-forge``: before the claimed sender's genuine round-r envelope to the
  victim, the relay delivers another envelope relabelled with that sender's id;
- ``relay-replay``: the relay delivers the claimed sender's round-r envelope
  twice, and its round-1 envelope again.

Every party runs the real ceremony object over sealed channels
(``tss.session.SecureSession``). The rule checked for every honest party: it
finishes, or waits (non-delivery: the deadline reports it), or aborts with a
``ProtocolError`` whose culprits are all malicious (possibly none); under relay
attacks every party finishes.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tss import local
from tss.ceremony import Ceremony, Message
from tss.channel import ChannelEnvelope, Roster, StaticKey
from tss.dkg.chilldkg import hostpubkey_gen
from tss.errors import ProtocolError
from tss.export import Export, ExportPlan
from tss.keygen import Keygen
from tss.keyshare import KeyShare, Scheme
from tss.reshare import PublicKeyring, Reshare, ResharePlan
from tss.session import Outbound, SecureSession
from tss.signing import NO_OPTIONS, signing_ceremony, throwaway_host_keys

SID = bytes(range(32))
DIGEST = bytes(32)
PARTY_ATTACKS = ("truncate", "flip", "withhold")
RELAY_ATTACKS = ("relay-forge", "relay-replay")


@dataclass(frozen=True)
class Kind:
    """A ceremony kind: its seats and a fresh ceremony for a seat."""

    name: str
    seats: tuple[int, ...]
    make: Callable[[int], Ceremony[Any]]

    @property
    def rounds(self) -> int:
        return self.make(self.seats[0]).rounds


def _fresh(shares: Sequence[KeyShare]) -> list[KeyShare]:
    """Copies with pristine DKLs23 setups (a failed check burns pairs in place)."""
    return [KeyShare.from_bytes(s.to_bytes()) for s in shares]


def kinds(scheme: Scheme) -> list[Kind]:
    """keygen, sign, refresh, reshare and export of a 2-of-3 keyring of ``scheme``."""
    hostseckeys = [secrets.token_bytes(32) for _ in range(3)]
    hostpubkeys = [hostpubkey_gen(k) for k in hostseckeys]
    shares = local.keygen(scheme, threshold=2, parties=3)
    keyring = PublicKeyring.from_share(shares[0])
    host_keys = throwaway_host_keys(3, secrets.token_bytes)
    # Key changes as the service runs them: certified with every seat's host key.
    refresh = ResharePlan.refresh(keyring, SID, hostpubkeys)
    # Seat 0 deals and leaves, seat 1 deals and stays, seat 2 only receives.
    reshare = ResharePlan(SID, keyring, (0, 1), (1, 2), 2, hostpubkeys=tuple(hostpubkeys))
    recipient = X25519PrivateKey.generate()
    export = ExportPlan(SID, keyring, (0, 1), 2, recipient.public_key().public_bytes_raw())

    def keygen(seat: int) -> Ceremony[Any]:
        return Keygen(
            scheme, hostseckeys[seat], hostpubkeys, 2, secrets.token_bytes, session_id=SID
        )

    def sign(seat: int) -> Ceremony[Any]:
        return signing_ceremony(
            _fresh(shares)[seat], [0, 1, 2], DIGEST, SID, secrets.token_bytes, NO_OPTIONS,
            host_keys[seat],
        )  # fmt: skip

    def refresh_seat(seat: int) -> Ceremony[Any]:
        share = _fresh(shares)[seat]
        return Reshare(refresh, seat, share, secrets.token_bytes, hostseckey=hostseckeys[seat])

    def reshare_seat(seat: int) -> Ceremony[Any]:
        share = _fresh(shares)[seat] if seat in reshare.dealers else None
        return Reshare(reshare, seat, share, secrets.token_bytes, hostseckey=hostseckeys[seat])

    def export_seat(seat: int) -> Ceremony[Any]:
        share = shares[seat] if seat in export.quorum else None
        key = recipient.private_bytes_raw() if seat == export.recipient else None
        return Export(export, seat, share, secrets.token_bytes, key)

    return [
        Kind(f"keygen-{scheme}", (0, 1, 2), keygen),
        Kind(f"sign-{scheme}", (0, 1, 2), sign),
        Kind(f"refresh-{scheme}", refresh.seats, refresh_seat),
        Kind(f"reshare-{scheme}", reshare.seats, reshare_seat),
        Kind(f"export-{scheme}", export.seats, export_seat),
    ]


### One run


class Party:
    """One seat's session; a malicious seat may wrap two (``equivocate``)."""

    def __init__(self, sessions: list[SecureSession[Any]], victim: int | None) -> None:
        self.sessions = sessions
        self.victim = victim
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        return all(s.done for s in self.sessions)

    def _route(self, outs: list[list[Outbound]]) -> list[Outbound]:
        if len(outs) == 1:
            return outs[0]
        first, rest = outs
        return [o for o in first if o.recipient == self.victim] + [
            o for o in rest if o.recipient != self.victim
        ]

    def start(self) -> list[Outbound]:
        return self._route([_saved(s, s.start()) for s in self.sessions])

    def receive(self, envelope: bytes) -> list[Outbound]:
        outs = []
        for s in self.sessions:
            try:
                outs.append(_saved(s, s.receive(envelope)))
            except Exception as e:  # the verdict; the test judges its type and culprits
                self.error = self.error or e
                outs.append([])
        return self._route(outs)


def _saved(session: SecureSession[Any], out: list[Outbound]) -> list[Outbound]:
    """A key change's pending share counts as saved at once (it is in memory here)."""
    if session.ceremony.awaiting_save:
        out = out + session.confirm_saved()
    return out


class Tampering(SecureSession[Any]):
    """A malicious seat's session: its round-``round_`` message to ``victim`` is
    truncated, flipped or withheld before it is sealed."""

    def __init__(self, attack: str, round_: int, victim: int, *args: Any) -> None:
        super().__init__(*args)
        self.attack, self.round, self.victim = attack, round_, victim
        self.tampered = False

    def _seal(self, messages: list[Message]) -> list[Outbound]:
        out: list[Message] = []
        for m in messages:
            targets = [m.recipient] if m.recipient is not None else self._peers()
            for peer in targets:
                payload = m.payload
                if m.round == self.round and peer == self.victim:
                    self.tampered = True
                    if self.attack == "withhold":
                        continue
                    if self.attack == "truncate":
                        payload = payload[:-1]
                    else:
                        middle = len(payload) // 2
                        payload = (
                            payload[:middle] + bytes([payload[middle] ^ 1]) + payload[middle + 1 :]
                        )
                out.append(Message(m.round, m.sender, peer, payload))
        return super()._seal(out)

    def _peers(self) -> list[int]:
        return [p for p in self.ceremony.parties if p != self.ceremony.me]


Relay = Callable[[int, Outbound, Callable[[int, bytes], None]], bool]
"""(sender, outbound, deliver) -> True when it delivered (or replaced) the envelope itself."""


@dataclass
class Cell:
    kind: str
    attacker: str  # "party <seat>" or "relay (claims <seat>)"
    attack: str
    round: int | None
    outcomes: dict[int, str]  # honest seat -> "finished", "waiting", "aborted: ..."
    blamed: dict[int, tuple[int, ...]]
    faults: list[str]  # violations of the rule, empty when the cell passes


def _keys(seats: Sequence[int]) -> tuple[dict[int, StaticKey], Roster]:
    keys = {seat: StaticKey.generate(secrets.token_bytes(32)) for seat in seats}
    roster = Roster.from_parties([(keys[s].party_id, keys[s].public_key) for s in seats], seats)
    return keys, roster


def _session(kind: Kind, seat: int, keys: dict[int, StaticKey], roster: Roster) -> Any:
    return SecureSession(
        kind.make(seat), keys[seat], roster, "room", kind.name, secrets.token_bytes
    )


def run_cell(
    kind: Kind,
    malicious: int | None,
    attack: str,
    round_: int | None,
    victim: int,
    relay: Relay | None = None,
    keys: tuple[dict[int, StaticKey], Roster] | None = None,
) -> tuple[dict[int, Party], bool]:
    """Run one cell; return every seat's party and whether the attack touched anything."""
    keys, roster = keys or _keys(kind.seats)
    parties: dict[int, Party] = {}
    tamperers: list[Tampering] = []
    for seat in kind.seats:
        if seat == malicious and attack == "equivocate":
            sessions = [_session(kind, seat, keys, roster) for _ in range(2)]
            parties[seat] = Party(sessions, victim)
        elif seat == malicious and round_ is not None:
            args = (kind.make(seat), keys[seat], roster, "room", kind.name, secrets.token_bytes)
            tamperer = Tampering(attack, round_, victim, *args)
            tamperers.append(tamperer)
            parties[seat] = Party([tamperer], None)
        else:
            parties[seat] = Party([_session(kind, seat, keys, roster)], None)
    queue: deque[tuple[int, Outbound]] = deque()
    touched = attack == "equivocate"

    def deliver(recipient: int, envelope: bytes) -> None:
        party = parties[recipient]
        if party.error is not None and recipient != malicious:
            return  # an aborted party takes no more messages
        queue.extend((recipient, o) for o in party.receive(envelope))

    for seat, party in parties.items():
        try:
            queue.extend((seat, o) for o in party.start())
        except Exception as e:
            party.error = e
    while queue:
        sender, out = queue.popleft()
        if relay is None or not relay(sender, out, deliver):
            deliver(out.recipient, out.envelope)
    touched = touched or any(t.tampered for t in tamperers)
    return parties, touched


def judge(
    kind: Kind,
    parties: dict[int, Party],
    malicious: int | None,
    attacker: str,
    attack: str,
    round_: int | None,
) -> Cell:
    outcomes, blamed, faults = {}, {}, []
    for seat, party in parties.items():
        if seat == malicious:
            continue
        error = party.error
        if error is None:
            outcomes[seat] = "finished" if party.done else "waiting"
            if malicious is None and not party.done:
                faults.append(f"seat {seat} did not finish under a relay attack")
            continue
        if not isinstance(error, ProtocolError):
            outcomes[seat] = f"error {type(error).__name__}"
            faults.append(f"seat {seat}: untyped {type(error).__name__}: {error}")
            continue
        blamed[seat] = error.culprits
        outcomes[seat] = "blames the attacker" if error.culprits else "aborts, blames no one"
        if set(error.culprits) - ({malicious} if malicious is not None else set()):
            faults.append(f"seat {seat} blames {error.culprits} ({type(error).__name__}: {error})")
    return Cell(kind.name, attacker, attack, round_, outcomes, blamed, faults)


def party_cells(kind: Kind, malicious: int) -> Iterator[Cell]:
    """Every attack of ``malicious`` on ``kind``; a (round, attack) that touches no
    message (the party sends nothing that round) is not a cell."""
    honest = [s for s in kind.seats if s != malicious]
    victim = honest[0]
    attacker = f"party {malicious}"
    parties, _ = run_cell(kind, malicious, "equivocate", None, victim)
    yield judge(kind, parties, malicious, attacker, "equivocate", None)
    for round_ in range(1, kind.rounds + 1):
        for attack in PARTY_ATTACKS:
            for target in honest:
                parties, touched = run_cell(kind, malicious, attack, round_, target)
                if touched:
                    yield judge(kind, parties, malicious, attacker, attack, round_)
                    break  # the first honest recipient of that round is the victim


def relay_cells(kind: Kind, claimed: int) -> Iterator[Cell]:
    """The relay forges or replays envelopes under ``claimed``'s sender id."""
    keys, roster = _keys(kind.seats)
    claimed_id = keys[claimed].party_id
    for round_ in range(1, kind.rounds + 1):
        for attack in RELAY_ATTACKS:
            seen: dict[tuple[int, int], list[Outbound]] = {}
            hit: list[bool] = []

            def relay(
                sender: int,
                out: Outbound,
                deliver: Callable[[int, bytes], None],
                round_: int = round_,
                attack: str = attack,
                seen: dict[tuple[int, int], list[Outbound]] = seen,
                hit: list[bool] = hit,
            ) -> bool:
                history = seen.setdefault((sender, out.recipient), [])
                history.append(out)
                if out.round != round_ or hit:
                    return False
                if attack == "relay-forge" and sender != claimed and out.recipient != claimed:
                    envelope = ChannelEnvelope.from_bytes(out.envelope)
                    header = dataclasses.replace(envelope.header, sender=claimed_id)
                    forged = ChannelEnvelope(header, envelope.enc, envelope.ciphertext)
                    hit.append(True)
                    deliver(out.recipient, forged.to_bytes())
                    return False
                if attack == "relay-replay" and sender == claimed:
                    hit.append(True)
                    deliver(out.recipient, out.envelope)
                    deliver(out.recipient, out.envelope)
                    deliver(out.recipient, history[0].envelope)
                    return True
                return False

            parties, _ = run_cell(kind, None, "relay", None, kind.seats[0], relay, (keys, roster))
            if hit:
                yield judge(kind, parties, None, f"relay (claims {claimed})", attack, round_)


def summary(cells: Sequence[Cell]) -> str:
    """Figures for the report: cells and outcomes of the honest parties."""
    outcomes = Counter(o for c in cells for o in c.outcomes.values())
    return (
        f"{len(cells)} cells, {sum(len(c.outcomes) for c in cells)} honest verdicts: "
        + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
    )
