"""One typed loader for the public test vectors vendored in this folder.

The files are verbatim copies of their upstream sources; PROVENANCE.md beside
this module names each file's repository, commit, path, SHA-256 and licence,
and tests/test_self_contained.py checks the SHA-256s.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parent
ATTESTATION = VECTORS / "attestation"


def vector_path(relative: str) -> Path:
    """Path of a vector file in this folder; fails loudly when it is missing."""
    path = VECTORS / relative
    if not path.is_file():
        raise FileNotFoundError(f"test vector {relative} not found under {VECTORS}")
    return path


def load_json(relative: str) -> Any:
    """Parse a JSON vector file, e.g. ``load_json("chilldkg/participant_step1_vectors.json")``."""
    with vector_path(relative).open() as f:
        return json.load(f)


def load_text(relative: str) -> str:
    """A text vector file, e.g. a BIP whose test vectors are inline."""
    return vector_path(relative).read_text(encoding="utf-8")


def load_csv(relative: str) -> list[dict[str, str]]:
    """Rows of a CSV vector file as dicts keyed by its header."""
    with vector_path(relative).open(newline="") as f:
        return list(csv.DictReader(f))
