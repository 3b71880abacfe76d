"""Ed25519 key generation and threshold signing (FROST(Ed25519, SHA-512), RFC 9591) next to
frost-rs in one run.

Ours, all parties in one process:

* ``DKG (ChillDKG layers)``: ChillDKG over edwards25519 (``tss.dkg`` with
  ``SessionParams.group = ED25519``): every participant's step 1, one
  coordinator's aggregation, every participant's step 2 (proofs of possession,
  share decryption and check, CertEq signature), the coordinator's certificate
  check and every participant's finalize;
* ``DKG (ceremony)``: ``tss.local.keygen("ed25519")``, the ceremony objects the
  service runs, where every party is its own coordinator and round-1 messages
  are host-key-signed and echoed (``tss.keygen``);
* ``sign (RFC 9591 rounds)``: every signer's ``signer_round1`` and
  ``signer_round2`` (each checks every commitment and self-checks its share),
  then ``coordinator_aggregate`` aggregating first and verifying the RFC 8032
  signature (shares checked one by one only on failure, as frost-core does);
* ``sign (ceremony)``: ``tss.local.sign``, the ceremony objects the service
  runs, which add host-key signatures on the round-1 commitments and the
  round-2 echo (``tss.signing``) and have every signer aggregate and verify.

frost-rs (PyPI ``frost-rs``, the Zcash Foundation's frost-ed25519 behind
base64 strings; ``pip install '.[bench]'``): ``preprocess`` for every signer,
``sign`` for every signer and ``aggregate``; its DKG (``round1..3`` for every
party: a Pedersen DKG with proofs of possession over authenticated, confidential
channels it does not provide, so no encryption and no agreement check). Keys
for our signing come from our DKG.

The machine may be shared, so the rows of one table are measured side by side:
each round calls every function once, in turn, and the medians of CPU time
are compared; load from other processes then falls on all of them alike.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

from bench.util import Stats
from tss import dkg, local, rfc9591
from tss.group import ED25519
from tss.rfc9591 import FROST_ED25519, KeyMaterial

CONFIGS = [(2, 3), (3, 5)]
RUNS = 50
DKG_RUNS = 30


def side_by_side(fns: Mapping[str, Callable[[], object]], runs: int) -> dict[str, Stats]:
    """Median wall and CPU ms of each function, one call of each per round, in turn."""
    for fn in fns.values():  # warm up
        fn()
    walls: dict[str, list[float]] = {name: [] for name in fns}
    cpus: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            cpus[name].append((time.process_time() - c0) * 1e3)
            walls[name].append((time.perf_counter() - w0) * 1e3)
    return {
        name: Stats(runs, statistics.median(walls[name]), statistics.median(cpus[name]))
        for name in fns
    }


def _print(label: str, table: Mapping[str, Stats]) -> None:
    for name, stats in table.items():
        print(f"    {label} {name:<20}: {stats}")
    if "ceremony" in table and "frost-rs" in table:
        ratio = table["ceremony"].cpu_ms / table["frost-rs"].cpu_ms
        print(f"    {label} ceremony / frost-rs (CPU): {ratio:.2f}")


def _ours(t: int, n: int) -> tuple[Callable[[], bytes], Callable[[], bytes], KeyMaterial, bytes]:
    shares = local.keygen("ed25519", threshold=t, parties=n)
    key = KeyMaterial(shares[0].public_key, shares[0].public_shares, t)
    signers = shares[:t]
    ids = [s.party_id for s in signers]
    msg = secrets.token_bytes(32)

    def rounds() -> bytes:
        states, comms = {}, {}
        for s in signers:
            states[s.party_id], comms[s.party_id] = rfc9591.signer_round1(
                FROST_ED25519, s.party_id, s.secret_share, key, msg, secrets.token_bytes(64)
            )
        psigs = {i: rfc9591.signer_round2(states[i], ids, comms) for i in ids}
        return rfc9591.coordinator_aggregate(
            FROST_ED25519, key, msg, ids, comms, psigs, verify_each=False
        )

    def ceremony() -> bytes:
        return local.sign(signers, msg)

    return rounds, ceremony, key, msg


def _chilldkg(t: int, n: int) -> Callable[[], bytes]:
    """One ChillDKG session over edwards25519, all participants and the coordinator."""
    hostseckeys = [secrets.token_bytes(32) for _ in range(n)]
    params = dkg.SessionParams([dkg.hostpubkey_gen(k) for k in hostseckeys], t, ED25519)

    def session() -> bytes:
        steps = [dkg.participant_step1(k, params, secrets.token_bytes(32)) for k in hostseckeys]
        cstate, cmsg1 = dkg.coordinator_step1([m for _, m in steps], params)
        seconds = [
            dkg.participant_step2(k, state1, cmsg1, secrets.token_bytes(32))
            for k, (state1, _) in zip(hostseckeys, steps, strict=True)
        ]
        cmsg2, output, _ = dkg.coordinator_finalize(cstate, [m for _, m in seconds])
        for state2, _ in seconds:
            dkg.participant_finalize(state2, cmsg2)
        return output.thresh_pk

    return session


def _frost_rs() -> Any:
    try:
        from frost_rs import utility_ed25519  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None
    return utility_ed25519


def _frost_rs_dkg(f: Any, t: int, n: int) -> tuple[dict[str, str], dict[str, str]]:
    ids = [f.get_id() for _ in range(n)]
    r1s, r1p = {}, {}
    for i in ids:
        r1s[i], r1p[i] = f.round1(i, t, n)
    r2s, r2p = {}, {}
    for i in ids:
        r2s[i], r2p[i] = f.round2(r1s[i], {k: v for k, v in r1p.items() if k != i})
    keys, pubkeys = {}, {}
    for i in ids:
        keys[i], pubkeys[i] = f.round3(
            r2s[i],
            {k: v for k, v in r1p.items() if k != i},
            {k: v[i] for k, v in r2p.items() if i in v},
        )
    return keys, pubkeys


def _frost_rs_sign(f: Any, t: int, n: int) -> Callable[[], str]:
    keys, pubkeys = _frost_rs_dkg(f, t, n)
    signers = list(keys)[:t]
    pubkey = pubkeys[signers[0]]
    msg = secrets.token_bytes(32)

    def sign() -> str:
        nonces, comms = {}, {}
        for i in signers:
            nonces[i], comms[i] = f.preprocess(keys[i])
        shares = {i: f.sign(msg, comms, nonces[i], keys[i]) for i in signers}
        return str(f.aggregate(msg, comms, shares, pubkey))

    if not f.verify(msg, pubkey, sign()):
        raise SystemExit("frost-rs signature does not verify")
    return sign


def main() -> None:
    frost_rs = _frost_rs()
    print("Ed25519 FROST (RFC 9591), all parties in one process; frost-rs in the same run:")
    if frost_rs is None:
        print("  frost-rs: not installed (pip install '.[bench]')")
    for t, n in CONFIGS:
        rounds, ceremony, key, msg = _ours(t, n)
        for fn in (rounds, ceremony):
            if not FROST_ED25519.verify(key.public_key, msg, fn()):
                raise SystemExit("Ed25519 signature does not verify")
        sign: dict[str, Callable[[], object]] = {"RFC 9591 rounds": rounds, "ceremony": ceremony}
        keygen: dict[str, Callable[[], object]] = {
            "ChillDKG layers": _chilldkg(t, n),
            "ceremony": lambda: local.keygen("ed25519", threshold=t, parties=n),  # noqa: B023
        }
        if frost_rs is not None:
            sign["frost-rs"] = _frost_rs_sign(frost_rs, t, n)
            keygen["frost-rs"] = lambda: _frost_rs_dkg(frost_rs, t, n)  # noqa: B023
        print(f"  {t}-of-{n}")
        _print("sign", side_by_side(sign, RUNS))
        _print("DKG ", side_by_side(keygen, DKG_RUNS))


if __name__ == "__main__":
    main()
