"""The committed generated code matches protos/ (run `make protos` after editing a .proto)."""

from __future__ import annotations

from pathlib import Path

import pytest
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "protos"
GENERATED_DIR = ROOT / "shardkeep" / "v1"


def generate(out: Path) -> None:
    protos = sorted(
        str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "shardkeep/v1").glob("*.proto")
    )
    args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--grpc_python_out={out}"]
    args += [f"--pyi_out={out}", *protos]
    if protoc.main(args) != 0:
        pytest.fail("protoc failed on protos/")


def generated_files(directory: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in directory.iterdir()
        if p.name.endswith(("_pb2.py", "_pb2_grpc.py", "_pb2.pyi"))
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh = generated_files(tmp_path / "shardkeep" / "v1")
    assert fresh, "no .proto files found"
    committed = generated_files(GENERATED_DIR)
    assert sorted(committed) == sorted(fresh), (
        "generated files differ from protos/: run make protos"
    )
    stale = [name for name in fresh if committed[name] != fresh[name]]
    assert stale == [], f"stale generated code: {stale}; run make protos"


def test_every_proto_package_matches_its_directory() -> None:
    for proto in (PROTO_DIR / "shardkeep/v1").glob("*.proto"):
        assert "package shardkeep.v1;" in proto.read_text(), proto.name
