"""``python -m devkms``: run the local KMS stand-in."""

from __future__ import annotations

from devkms.main import main

raise SystemExit(main())
