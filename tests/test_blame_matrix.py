"""The blame matrix (``tests/blame_matrix.py``): no honest party ever names another.

The default suite runs every cell of the BIP-340 ceremonies and of ECDSA
signing; the ECDSA keygen, refresh, reshare and export cells (each run costs
DKLs23 pairwise setups) run with ``-m blamematrix``.
"""

from __future__ import annotations

import functools

import pytest

from tests.blame_matrix import Cell, Kind, kinds, party_cells, relay_cells, summary


@functools.cache
def _kinds(scheme: str) -> dict[str, Kind]:
    return {k.name: k for k in kinds(scheme)}  # type: ignore[arg-type]


def _check(cells: list[Cell]) -> None:
    faults = [f"{c.kind} {c.attacker} {c.attack} r{c.round}: {f}" for c in cells for f in c.faults]
    assert cells, "no cell ran"
    assert not faults, "\n".join(faults)
    print(summary(cells))


FAST = ["keygen-bip340", "sign-bip340", "refresh-bip340", "reshare-bip340", "export-bip340"]
FAST_ECDSA = ["sign-ecdsa-secp256k1"]
FULL_ECDSA = ["keygen-ecdsa-secp256k1", "refresh-ecdsa-secp256k1", "reshare-ecdsa-secp256k1",
              "export-ecdsa-secp256k1"]  # fmt: skip


def _cells(name: str) -> list[Cell]:
    scheme = "bip340" if name.endswith("bip340") else "ecdsa-secp256k1"
    kind = _kinds(scheme)[name]
    return [
        cell for seat in kind.seats for cell in (*party_cells(kind, seat), *relay_cells(kind, seat))
    ]


@pytest.mark.parametrize("name", FAST + FAST_ECDSA)
def test_blame_matrix_names_only_malicious_parties(name: str) -> None:
    """Attacks: every party, in turn, equivocates in every round, or sends its victim a
    truncated or flipped message, or withholds it; the relay forges or replays
    envelopes under every party's id. Every honest party finishes, waits, or names
    only the attacker; under relay attacks every party finishes."""
    _check(_cells(name))


@pytest.mark.blamematrix
@pytest.mark.parametrize("name", FULL_ECDSA)
def test_blame_matrix_names_only_malicious_parties_ecdsa(name: str) -> None:
    """As ``test_blame_matrix_names_only_malicious_parties``, for the ECDSA key changes."""
    _check(_cells(name))
