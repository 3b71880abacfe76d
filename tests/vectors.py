"""One typed loader for the public test vectors in ../shared/vectors (STYLE.md principle 7).

The vector files are vendored verbatim in the steering repo's ``shared/vectors``
(see its PROVENANCE.md); CI clones this repo with ``shared`` beside it. Set
``SHARDKEEP_SHARED`` to point elsewhere.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

SHARED = Path(os.environ.get("SHARDKEEP_SHARED", Path(__file__).resolve().parents[2] / "shared"))
VECTORS = SHARED / "vectors"


def vector_path(relative: str) -> Path:
    """Path of a vector file under ``shared/vectors``; fails loudly when it is missing."""
    path = VECTORS / relative
    if not path.is_file():
        raise FileNotFoundError(f"test vector {relative} not found under {VECTORS}")
    return path


def load_json(relative: str) -> Any:
    """Parse a JSON vector file, e.g. ``load_json("chilldkg/participant_step1_vectors.json")``."""
    with vector_path(relative).open() as f:
        return json.load(f)


def load_csv(relative: str) -> list[dict[str, str]]:
    """Rows of a CSV vector file as dicts keyed by its header."""
    with vector_path(relative).open(newline="") as f:
        return list(csv.DictReader(f))
