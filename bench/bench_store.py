"""Latency of the host's ciphertext store per operation, SQLite and PostgreSQL side by side.

These are the store's share of the service's added latency (docs/benchmarks.md): one
call is one transaction. PostgreSQL runs only when it is reachable
(``SHARDKEEP_BENCH_POSTGRES``, default the test server), in a scratch schema.
"""

from __future__ import annotations

import itertools
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg

from bench.util import measure
from host.store import (
    EncryptedDataKey,
    Keyring,
    NewWallet,
    Party,
    PublicKey,
    SealedCiphertext,
    SealedShare,
    StaticKey,
    Store,
)
from host.stores import open_store

POSTGRES_DSN = os.environ.get(
    "SHARDKEEP_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
SHARE_BYTES = 4096  # a sealed FROST share is ~0.3 KB; DKLs23 with OT setups a few KB


@contextmanager
def _sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{Path(tmp) / 'bench.db'}"


@contextmanager
def _postgres_url() -> Iterator[str | None]:
    try:
        admin = psycopg.connect(POSTGRES_DSN, autocommit=True, connect_timeout=2)
    except psycopg.OperationalError:
        yield None
        return
    schema = f"bench_store_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            separator = "&" if "?" in POSTGRES_DSN else "?"
            yield f"{POSTGRES_DSN}{separator}options={quote(f'-csearch_path={schema}')}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _share(wallet_id: str, epoch: int) -> SealedShare:
    return SealedShare(
        wallet_id,
        0,
        "ecdsa-secp256k1",
        epoch,
        EncryptedDataKey(secrets.token_bytes(184)),  # KMS ciphertext blob size
        SealedCiphertext(secrets.token_bytes(SHARE_BYTES)),
    )


def _cases(store: Store) -> list[tuple[str, Callable[[], object]]]:
    keyring = Keyring(
        2, tuple(Party(f"p{i}", StaticKey(secrets.token_bytes(32))) for i in range(3))
    )
    public_key = PublicKey(b"\x02" + secrets.token_bytes(32))
    counter = itertools.count()

    def keygen() -> None:
        wallet_id = f"w{next(counter)}"
        store.create_wallet(
            NewWallet(wallet_id, "ecdsa-secp256k1", public_key, keyring), [_share(wallet_id, 0)]
        )
        store.commit_epoch(wallet_id, 0)

    keygen()
    hot = "w0"
    epochs = itertools.count(1)

    def refresh() -> None:
        epoch = next(epochs)
        store.begin_epoch(hot, epoch)
        store.put_pending_share(_share(hot, epoch))
        store.commit_epoch(hot, epoch)

    return [
        ("keygen (create + commit)", keygen),
        ("refresh (begin + put + commit)", refresh),
        ("get_current_share", lambda: store.get_current_share(hot, 0)),
        ("get_wallet", lambda: store.get_wallet(hot)),
    ]


def main() -> None:
    print(f"sealed share {SHARE_BYTES} B; median of 50 calls, one thread")
    with _sqlite_url() as sqlite_url, _postgres_url() as postgres_url:
        for name, url in (("sqlite", sqlite_url), ("postgres", postgres_url)):
            if url is None:
                print(f"{name:9} skipped: PostgreSQL is not reachable")
                continue
            with open_store(url) as store:
                for label, fn in _cases(store):
                    print(f"{name:9} {label:32} {measure(fn, runs=50, warmup=3)}", flush=True)


if __name__ == "__main__":
    main()
