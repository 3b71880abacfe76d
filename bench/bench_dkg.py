"""ChillDKG: a full session, all participants and the coordinator in one process.

Reports median wall and CPU milliseconds per ceremony, the bytes every message
puts on the wire (each coordinator message counted once per recipient), and the
rounds (participant -> coordinator -> participants exchanges).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bench.util import measure
from tss import dkg

CONFIGS = [(2, 2), (2, 3), (3, 5), (7, 10)]
ROUNDS = 2  # pmsg1/cmsg1, then pmsg2/cmsg2 (CertEq)


@dataclass(frozen=True)
class Ceremony:
    hostseckeys: tuple[bytes, ...]
    params: dkg.SessionParams

    @staticmethod
    def new(t: int, n: int) -> Ceremony:
        seckeys = tuple(os.urandom(32) for _ in range(n))
        return Ceremony(seckeys, dkg.SessionParams([dkg.hostpubkey_gen(k) for k in seckeys], t))

    def run(self) -> int:
        """One session; returns the bytes sent over the wire."""
        params = self.params
        states1, pmsgs1 = [], []
        for key in self.hostseckeys:
            state1, pmsg1 = dkg.participant_step1(key, params, os.urandom(32))
            states1.append(state1)
            pmsgs1.append(pmsg1)
        cstate, cmsg1 = dkg.coordinator_step1(pmsgs1, params)
        states2, pmsgs2 = [], []
        for key, state1 in zip(self.hostseckeys, states1, strict=True):
            state2, pmsg2 = dkg.participant_step2(key, state1, cmsg1, os.urandom(32))
            states2.append(state2)
            pmsgs2.append(pmsg2)
        cmsg2, coutput, _ = dkg.coordinator_finalize(cstate, pmsgs2)
        for state2 in states2:
            output, _ = dkg.participant_finalize(state2, cmsg2)
            if output.thresh_pk != coutput.thresh_pk:
                raise RuntimeError("participants disagree")
        n = params.n
        return sum(map(len, pmsgs1)) + n * len(cmsg1) + sum(map(len, pmsgs2)) + n * len(cmsg2)


def main() -> None:
    for t, n in CONFIGS:
        ceremony = Ceremony.new(t, n)
        wire = ceremony.run()
        stats = measure(ceremony.run, runs=20)
        print(
            f"ChillDKG {t}-of-{n:<2} all parties: {stats}  "
            f"{wire:6d} bytes on the wire, {ROUNDS} rounds",
            flush=True,
        )


if __name__ == "__main__":
    main()
