"""Shared fixtures: real services on this machine (PostgreSQL, Redis, NATS).

In CI (``CI`` set) a missing service fails the test; on a laptop it skips with
the reason (a laptop may not run them; CI must).
"""

from __future__ import annotations

import os
import socket

import pytest
from hypothesis import settings

POSTGRES_DSN = os.environ.get(
    "SHARDKEEP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("SHARDKEEP_TEST_REDIS", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("SHARDKEEP_TEST_NATS", "nats://127.0.0.1:4222")

# Property tests draw the same examples on every run, so a red run is a fault that
# reproduces, never the luck of the draw. HYPOTHESIS_PROFILE=explore draws fresh ones.
settings.register_profile("deterministic", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Fail in CI, skip elsewhere, when ``name`` is not listening on host:port."""
    if _reachable(host, port):
        return
    reason = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must start it; see .ci/run)")
    pytest.skip(f"{reason}; start it to run this test")


@pytest.fixture
def postgres_dsn() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_DSN


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
def nats_url() -> str:
    require_service("NATS", "127.0.0.1", 4222)
    return NATS_URL
